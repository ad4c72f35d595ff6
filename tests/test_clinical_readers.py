"""Clinical readers on small hand-written tables: eICU, mimic3-benchmarks, PhysioNet 2012."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest

from harness.datasets.clinical_grid import CHANNELS, build_grid
from harness.datasets.clinical_readers import (
    COUNT_KEYS,
    read_eicu,
    read_mimic3_benchmarks,
    read_physionet2012,
)
from harness.errors import DataFormatError, UserError

HR, SBP, DBP, MBP, RR, TEMP, SPO2 = range(len(CHANNELS))


def write(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join(lines) + "\n"
    if path.name.endswith(".gz"):
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            fh.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def counts(**nonzero: int) -> dict[str, int]:
    out = dict.fromkeys(COUNT_KEYS, 0)
    out.update(nonzero)
    return out


def check_events(cohort, expected: list[tuple[int, float, int, float]]) -> None:
    """(stay index, hours, channel, value), in order."""
    ev = cohort.events
    assert len(ev) == len(expected)
    assert ev.stay.tolist() == [e[0] for e in expected]
    np.testing.assert_allclose(ev.hours, [e[1] for e in expected], rtol=1e-12)
    assert ev.channel.tolist() == [e[2] for e in expected]
    np.testing.assert_allclose(ev.value, np.array([e[3] for e in expected], np.float32), rtol=1e-7)
    assert ev.stay.dtype == np.int64 and ev.channel.dtype == np.int8 and ev.value.dtype == np.float32


# --------------------------------------------------------------------------------------------------
# eICU
# --------------------------------------------------------------------------------------------------

PATIENT = [
    "patientunitstayid,gender,age,hospitaldischargestatus,unitdischargeoffset",
    "1003,Male,> 89,Expired,2000",  # 33.3 h, kept
    "1001,Female,45,Alive,1500",  # 25 h, kept
    "1002,Male,70,Alive,600",  # 10 h < 24: short
    "1004,Female,16,Alive,3000",  # minor
    "1005,Male,60,,3000",  # unknown outcome
    "1006,Female,,Alive,2880",  # age unknown: kept
]
VITAL_HEADER = ("vitalperiodicid,patientunitstayid,observationoffset,temperature,sao2,heartrate,respiration,"
                "cvp,systemicsystolic,systemicdiastolic,systemicmean")
VITALS = [
    VITAL_HEADER,
    "1,1001,5,37.0,98,80,16,,120,60,80",
    "2,1001,35,,,90,,,,,",  # same hour as the first: HR mean 85
    "3,1001,185,,,400,20,,,,",  # HR 400 out of range
    "4,1001,1500,,,70,,,,,",  # 25 h: outside the window
    "5,1003,-10,,,100,,,,,",  # before admission: outside the window
    "6,1003,65,,95,,,,,,",
    "7,1002,10,,,60,,,,,",  # a dropped (short) stay
    "8,9999,10,,,60,,,,,",  # not in patient.csv
]


def eicu_root(tmp_path: Path, patient=PATIENT, vitals=VITALS, gz: bool = False) -> Path:
    ext = ".csv.gz" if gz else ".csv"
    write(tmp_path / f"patient{ext}", patient)
    write(tmp_path / f"vitalPeriodic{ext}", vitals)
    return tmp_path


def test_eicu_cohort_and_events(tmp_path):
    c = read_eicu(eicu_root(tmp_path))
    assert c.source == "eicu"
    assert c.stay_ids.tolist() == [1001, 1003, 1006]
    assert c.mortality.tolist() == [0, 1, 0]
    np.testing.assert_allclose(c.los_days, np.array([1500, 2000, 2880], np.float32) / 1440, rtol=1e-6)
    check_events(c, [
        (0, 5 / 60, HR, 80), (0, 5 / 60, SBP, 120), (0, 5 / 60, DBP, 60), (0, 5 / 60, MBP, 80),
        (0, 5 / 60, RR, 16), (0, 5 / 60, TEMP, 37.0), (0, 5 / 60, SPO2, 98),
        (0, 35 / 60, HR, 90),
        (0, 185 / 60, RR, 20),
        (1, 65 / 60, SPO2, 95),
    ])
    assert c.counts == counts(stays_read=6, unknown_outcome=1, minors=1, short_stays=1, stays=3,
                              outside_window=2, out_of_range=1, events=10)
    assert c.files == [tmp_path / "patient.csv", tmp_path / "vitalPeriodic.csv"]


def test_eicu_grid(tmp_path):
    c = read_eicu(eicu_root(tmp_path))
    fill = np.arange(100, 107, dtype=np.float32)
    values, mask = build_grid(c.events, len(c.stay_ids), 24, fill)
    assert values.shape == mask.shape == (3, 24, 7)
    assert values[0, 0, HR] == 85 and mask[0, 0, HR] == 1  # mean of 80 and 90 in hour 0
    assert values[0, 1:, HR].tolist() == [85] * 23 and mask[0, 1:, HR].sum() == 0  # carried; 400 dropped
    assert values[0, :3, RR].tolist() == [16, 16, 16] and values[0, 3:, RR].tolist() == [20] * 21
    assert values[1, 0, SPO2] == 106 and mask[1, 0, SPO2] == 0  # the fill before the first observation
    assert values[1, 1, SPO2] == 95 and mask[1, 1, SPO2] == 1
    assert values[1, 0, HR] == 100  # HR never observed inside the window: the fill
    np.testing.assert_array_equal(values[2], np.broadcast_to(fill, (24, 7)))
    assert mask[2].sum() == 0


def test_eicu_gzip_and_min_stay(tmp_path):
    c = read_eicu(eicu_root(tmp_path, gz=True), window=12, min_stay_hours=0)
    assert c.stay_ids.tolist() == [1001, 1002, 1003, 1006]
    assert c.counts["short_stays"] == 0 and c.counts["outside_window"] == 2
    assert c.events.stay.tolist().count(1) == 1  # 1002's HR 60 at 10 min
    assert [p.name for p in c.files] == ["patient.csv.gz", "vitalPeriodic.csv.gz"]


def test_eicu_missing_table(tmp_path):
    eicu_root(tmp_path)
    (tmp_path / "vitalPeriodic.csv").unlink()
    with pytest.raises(DataFormatError, match=r"vitalPeriodic\.csv or vitalPeriodic\.csv\.gz.*credentialed.*"
                                              r"eicu-crd/2\.0"):
        read_eicu(tmp_path)


def test_eicu_missing_column(tmp_path):
    patient = [row.rsplit(",", 2)[0] + "," + row.rsplit(",", 1)[1] for row in PATIENT]  # drop the status
    with pytest.raises(DataFormatError, match=r"patient\.csv lacks column\(s\) hospitaldischargestatus"):
        read_eicu(eicu_root(tmp_path, patient=patient))
    vitals = [",".join(r.split(",")[:-1]) for r in VITALS]
    with pytest.raises(DataFormatError, match=r"vitalPeriodic\.csv lacks column\(s\) systemicmean"):
        read_eicu(eicu_root(tmp_path, vitals=vitals))


@pytest.mark.parametrize("row, match", [
    ("1007,Male,old,Alive,2000", r"patient\.csv line 8: age 'old' is not a number"),
    ("1007,Male,50,Dead,2000", r"patient\.csv line 8: hospitaldischargestatus 'Dead'"),
    ("1007,Male,50,Alive,", r"patient\.csv line 8: unitdischargeoffset is empty"),
    ("1007,Male,50,Alive,long", r"patient\.csv does not parse \(.*column #4 'unitdischargeoffset'.*'long'"),
    ("1001,Male,50,Alive,2000", r"stay id 1001 appears more than once in .*patient\.csv"),
])
def test_eicu_bad_patient(tmp_path, row, match):
    with pytest.raises(DataFormatError, match=match):
        read_eicu(eicu_root(tmp_path, patient=PATIENT + [row]))


def test_eicu_bad_vitals(tmp_path):
    with pytest.raises(DataFormatError, match=r"vitalPeriodic\.csv does not parse \(.*column #5 'heartrate'.*"
                                              r"'fast'.*eicu-crd"):
        read_eicu(eicu_root(tmp_path, vitals=VITALS + ["9,1001,70,,,fast,,,,,"]))
    with pytest.raises(DataFormatError, match=r"vitalPeriodic\.csv line 10: observationoffset is empty"):
        read_eicu(eicu_root(tmp_path, vitals=VITALS + ["9,1001,,,,80,,,,,"]))


def test_bad_window(tmp_path):
    with pytest.raises(UserError, match="window"):
        read_eicu(eicu_root(tmp_path), window=0)


# --------------------------------------------------------------------------------------------------
# mimic3-benchmarks
# --------------------------------------------------------------------------------------------------

EPISODE_HEADER = "Icustay,Ethnicity,Gender,Age,Height,Weight,Length of Stay,Mortality,Diagnosis 4019"
TS_HEADER = ("Hours,Capillary refill rate,Diastolic blood pressure,Fraction inspired oxygen,"
             "Glascow coma scale eye opening,Glascow coma scale motor response,Glascow coma scale total,"
             "Glascow coma scale verbal response,Glucose,Heart Rate,Height,Mean blood pressure,"
             "Oxygen saturation,Respiratory rate,Systolic blood pressure,Temperature,Weight,pH")
TS_COLS = TS_HEADER.split(",")


def ts_row(hours: float, **cells: object) -> str:
    """A timeseries line: ``cells`` by column name with spaces as underscores."""
    named = {k.replace("_", " "): v for k, v in cells.items()}
    return ",".join([str(hours)] + [str(named.get(c, "")) for c in TS_COLS[1:]])


def episode(stay: int, age: object, los: float, mort: int) -> list[str]:
    return [EPISODE_HEADER, f"{stay},1,2,{age},,,{los},{mort},0"]


def mimic_root(root: Path, split: bool = False) -> Path:
    a = root / "train" / "10001" if split else root / "10001"
    b = root / "test" / "10002" if split else root / "10002"
    c = root / "test" / "10003" if split else root / "10003"
    write(a / "episode1.csv", episode(200003, 75.5, 3.5, 1))
    write(a / "episode1_timeseries.csv", [
        TS_HEADER,
        ts_row(0.25, Diastolic_blood_pressure=60, Glascow_coma_scale_eye_opening="To Pain",
               Glascow_coma_scale_total=8, Heart_Rate=80, Mean_blood_pressure=75, Oxygen_saturation=97,
               Respiratory_rate=18, Systolic_blood_pressure=110, Temperature=36.6),
        ts_row(1.5, Heart_Rate=500),  # out of range
        ts_row(47.9, Heart_Rate=88),
        ts_row(49.0, Heart_Rate=90),  # outside the window
    ])
    write(a / "episode2.csv", episode(200001, 60, 1.5, 0))  # 36 h < 48: short
    write(a / "episode2_timeseries.csv", [TS_HEADER, ts_row(1.0, Heart_Rate=70)])
    write(b / "episode1.csv", episode(200002, 40, 2.5, 0))
    write(b / "episode1_timeseries.csv", [TS_HEADER, ts_row(-0.5, Heart_Rate=70),
                                          ts_row(3.2, Temperature=37.5), ts_row(4.0)])
    write(c / "episode1.csv", episode(200004, 17, 5.0, 0))  # minor
    write(c / "episode1_timeseries.csv", [TS_HEADER, ts_row(1.0, Heart_Rate=70)])
    write(root / "all_stays.csv", ["ignored"])
    return root


@pytest.mark.parametrize("split", [False, True])
def test_mimic3_benchmarks(tmp_path, split):
    c = read_mimic3_benchmarks(mimic_root(tmp_path, split))
    assert c.source == "mimic3-benchmarks"
    assert c.stay_ids.tolist() == [200002, 200003]
    assert c.mortality.tolist() == [0, 1]
    np.testing.assert_allclose(c.los_days, [2.5, 3.5])
    check_events(c, [
        (0, 3.2, TEMP, 37.5),
        (1, 0.25, HR, 80), (1, 0.25, SBP, 110), (1, 0.25, DBP, 60), (1, 0.25, MBP, 75), (1, 0.25, RR, 18),
        (1, 0.25, TEMP, 36.6), (1, 0.25, SPO2, 97),
        (1, 47.9, HR, 88),
    ])
    assert c.counts == counts(stays_read=4, minors=1, short_stays=1, stays=2, outside_window=2,
                              out_of_range=1, events=9)
    names = sorted(str(p.relative_to(tmp_path)) for p in c.files)
    assert len(names) == 6 and all(n.endswith(".csv") for n in names)  # 4 episodes, 2 timeseries read


def test_mimic3_benchmarks_min_stay(tmp_path):
    c = read_mimic3_benchmarks(mimic_root(tmp_path), window=24, min_stay_hours=24)
    assert c.stay_ids.tolist() == [200001, 200002, 200003]
    assert c.counts["short_stays"] == 0
    assert c.counts["outside_window"] == 3  # -0.5 h, and 47.9 h and 49 h now outside


def test_mimic3_benchmarks_no_subjects(tmp_path):
    write(tmp_path / "all_stays.csv", ["x"])
    with pytest.raises(DataFormatError, match=r"has no subject folders.*YerevaNN/mimic3-benchmarks"):
        read_mimic3_benchmarks(tmp_path)


def test_mimic3_benchmarks_missing_timeseries(tmp_path):
    mimic_root(tmp_path)
    (tmp_path / "10002" / "episode1_timeseries.csv").unlink()
    with pytest.raises(DataFormatError,
                       match=r"10002/episode1\.csv has no matching .*10002/episode1_timeseries"):
        read_mimic3_benchmarks(tmp_path)


def test_mimic3_benchmarks_missing_column(tmp_path):
    mimic_root(tmp_path)
    write(tmp_path / "10002" / "episode1.csv",
          [EPISODE_HEADER.replace(",Mortality", ""), "200002,1,2,40,,,2.5,0"])
    with pytest.raises(DataFormatError, match=r"10002/episode1\.csv lacks column\(s\) 'Mortality'"):
        read_mimic3_benchmarks(tmp_path)
    mimic_root(tmp_path)
    write(tmp_path / "10002" / "episode1_timeseries.csv",
          [TS_HEADER.replace("Heart Rate,", ""), "1.0" + "," * 16])
    with pytest.raises(DataFormatError, match=r"episode1_timeseries\.csv lacks column\(s\) 'Heart Rate'"):
        read_mimic3_benchmarks(tmp_path)


@pytest.mark.parametrize("file, lines, match", [
    ("episode1_timeseries.csv", [TS_HEADER, ts_row(1.0), ts_row(2.0, Heart_Rate="abc")],
     r"10002/episode1_timeseries\.csv line 3: 'Heart Rate' 'abc' is not a number"),
    ("episode1_timeseries.csv", [TS_HEADER, "1.0,2.0"], r"episode1_timeseries\.csv line 2 has 2 fields"),
    ("episode1.csv", episode(200002, "forty", 2.5, 0), r"10002/episode1\.csv line 2: Age 'forty'"),
    ("episode1.csv", episode(200002, 40, 2.5, 2), r"10002/episode1\.csv line 2: Mortality '2' is not 0 or 1"),
    ("episode1.csv", episode(200003, 40, 2.5, 0), r"Icustay 200003 appears in more than one episode file"),
])
def test_mimic3_benchmarks_bad_values(tmp_path, file, lines, match):
    mimic_root(tmp_path)
    write(tmp_path / "10002" / file, lines)
    with pytest.raises(DataFormatError, match=match):
        read_mimic3_benchmarks(tmp_path)


# --------------------------------------------------------------------------------------------------
# PhysioNet 2012
# --------------------------------------------------------------------------------------------------

OUTCOMES_HEADER = "RecordID,SAPS-I,SOFA,Length_of_stay,Survival,In-hospital_death"
RECORD_132539 = [
    "Time,Parameter,Value", "00:00,RecordID,132539", "00:00,Age,54", "00:00,Gender,0", "00:00,Height,-1",
    "00:00,ICUType,4", "00:00,Weight,-1", "00:07,GCS,15", "00:07,HR,73", "00:07,NIDiasABP,65",
    "00:07,NIMAP,92.33", "00:07,NISysABP,147", "00:07,RespRate,19", "00:07,Temp,35.1", "00:37,HR,77",
    "01:37,SaO2,-1",  # -1 = missing: out of range
    "02:10,DiasABP,60", "47:59,HR,80",
    "48:00,HR,81",  # outside the window
]


def physionet_root(root: Path) -> Path:
    a, b = root / "set-a", root / "set-b"
    write(a / "132539.txt", RECORD_132539)
    write(a / "132540.txt", ["Time,Parameter,Value", "00:00,RecordID,132540", "05:30,MAP,80",
                             "10:15,SysABP,120", "11:00,pH,7.4"])
    write(a / "132541.txt", ["Time,Parameter,Value", "00:00,RecordID,132541", "01:00,HR,60"])
    write(root / "Outcomes-a.txt", [OUTCOMES_HEADER, "132539,6,1,5,-1,0", "132540,16,8,8,5,1",
                                    "132541,10,2,1,-1,0"])  # 132541: 1 day < 48 h
    write(b / "140501.txt", ["Time,Parameter,Value", "00:00,RecordID,140501", "01:00,HR,90"])
    write(b / "140502.txt", ["Time,Parameter,Value", "00:00,RecordID,140502", "12:30,HR,100"])
    write(root / "Outcomes-b.txt", [OUTCOMES_HEADER, "140502,10,2,3,2,1", "140501,10,2,-1,-1,0"])
    return root


def test_physionet2012(tmp_path):
    c = read_physionet2012(physionet_root(tmp_path))
    assert c.source == "physionet2012"
    assert c.stay_ids.tolist() == [132539, 132540, 140502]
    assert c.mortality.tolist() == [0, 1, 1]
    np.testing.assert_allclose(c.los_days, [5, 8, 3])
    m7 = 7 / 60
    check_events(c, [
        (0, m7, HR, 73), (0, m7, DBP, 65), (0, m7, MBP, 92.33), (0, m7, SBP, 147), (0, m7, RR, 19),
        (0, m7, TEMP, 35.1), (0, 37 / 60, HR, 77), (0, 2 + 10 / 60, DBP, 60), (0, 47 + 59 / 60, HR, 80),
        (1, 5.5, MBP, 80), (1, 10.25, SBP, 120),
        (2, 12.5, HR, 100),
    ])
    assert c.counts == counts(stays_read=5, unknown_los=1, short_stays=1, stays=3, outside_window=1,
                              out_of_range=1, events=12)
    assert sorted(p.name for p in c.files) == ["132539.txt", "132540.txt", "132541.txt", "140501.txt",
                                               "140502.txt", "Outcomes-a.txt", "Outcomes-b.txt"]


def test_physionet2012_min_stay(tmp_path):
    c = read_physionet2012(physionet_root(tmp_path), window=24, min_stay_hours=0)
    assert c.stay_ids.tolist() == [132539, 132540, 132541, 140502]
    assert c.counts["short_stays"] == 0 and c.counts["outside_window"] == 2  # 47:59 and 48:00


def test_physionet2012_missing_outcomes_file(tmp_path):
    physionet_root(tmp_path)
    (tmp_path / "Outcomes-b.txt").unlink()
    with pytest.raises(DataFormatError,
                       match=r"set-b has no outcomes file .*Outcomes-b\.txt.*challenge-2012"):
        read_physionet2012(tmp_path)


def test_physionet2012_missing_sets(tmp_path):
    write(tmp_path / "Outcomes-a.txt", [OUTCOMES_HEADER])
    with pytest.raises(DataFormatError, match=r"has no set-a/"):
        read_physionet2012(tmp_path)


def test_physionet2012_missing_outcome_row(tmp_path):
    physionet_root(tmp_path)
    write(tmp_path / "Outcomes-a.txt", [OUTCOMES_HEADER, "132539,6,1,5,-1,0", "132541,10,2,1,-1,0"])
    with pytest.raises(DataFormatError,
                       match=r"132540\.txt \(RecordID 132540\) has no row in .*Outcomes-a\.txt"):
        read_physionet2012(tmp_path)


def test_physionet2012_missing_column(tmp_path):
    physionet_root(tmp_path)
    write(tmp_path / "Outcomes-b.txt", ["RecordID,SAPS-I,SOFA,Length_of_stay,Survival", "140502,10,2,3,2"])
    with pytest.raises(DataFormatError, match=r"Outcomes-b\.txt lacks column\(s\) 'In-hospital_death'"):
        read_physionet2012(tmp_path)


@pytest.mark.parametrize("line, match", [
    ("03:00,HR,abc", r"132539\.txt line 20: HR 'abc' is not a number"),
    ("3h,HR,70", r"132539\.txt line 20: Time '3h' is not hh:mm"),
    ("03:00,HR", r"132539\.txt line 20 has 2 fields"),
])
def test_physionet2012_bad_record(tmp_path, line, match):
    physionet_root(tmp_path)
    write(tmp_path / "set-a" / "132539.txt", RECORD_132539 + [line])
    with pytest.raises(DataFormatError, match=match):
        read_physionet2012(tmp_path)


def test_physionet2012_bad_outcome_and_no_record_id(tmp_path):
    physionet_root(tmp_path)
    write(tmp_path / "Outcomes-b.txt", [OUTCOMES_HEADER, "140502,10,2,3,2,yes", "140501,10,2,-1,-1,0"])
    with pytest.raises(DataFormatError,
                       match=r"Outcomes-b\.txt line 2: In-hospital_death 'yes' is not 0 or 1"):
        read_physionet2012(tmp_path)
    shutil.rmtree(tmp_path)
    physionet_root(tmp_path)
    write(tmp_path / "set-b" / "140501.txt", ["Time,Parameter,Value", "01:00,HR,90"])
    with pytest.raises(DataFormatError, match=r"140501\.txt has no RecordID line"):
        read_physionet2012(tmp_path)
