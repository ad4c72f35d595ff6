"""MIMIC-III / MIMIC-IV readers on small hand-written tables, the CSV block reader, the hourly grid,
the synthetic MIMIC-III writer and the ClinicalSeries DataModule on it."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from harness.datasets.clinical_grid import CHANNELS, Events, build_grid, csv_header, map_csv, stream_csv
from harness.datasets.clinical_mimic import (
    FAHRENHEIT_ITEMS,
    MIMIC3_ITEMS,
    MIMIC4_ITEMS,
    SyntheticMimic,
    read_mimic3,
    read_mimic4,
    write_synthetic_mimic3,
)
from harness.errors import DataFormatError, UserError

HR, SBP, DBP, MBP, RR, TEMP, SPO2 = range(len(CHANNELS))


def write(path: Path, lines: list[str], bom: bool = False, eol: str = "\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = ("\ufeff" if bom else "") + eol.join(lines) + eol
    if path.name.endswith(".gz"):
        with gzip.open(path, "wb") as fh:
            fh.write(text.encode("utf-8"))
    else:
        path.write_bytes(text.encode("utf-8"))
    return path


def check_events(cohort, expected: list[tuple[int, float, int, float]]) -> None:
    """(stay index, hours, channel, value), in order."""
    ev = cohort.events
    assert len(ev) == len(expected)
    assert ev.stay.tolist() == [e[0] for e in expected]
    np.testing.assert_allclose(ev.hours, [e[1] for e in expected], rtol=1e-12, atol=1e-12)
    assert ev.channel.tolist() == [e[2] for e in expected]
    np.testing.assert_allclose(ev.value, np.array([e[3] for e in expected], np.float32), rtol=1e-7)
    assert ev.stay.dtype == np.int64 and ev.channel.dtype == np.int8 and ev.value.dtype == np.float32


def f2c(f: float) -> float:
    return (f - 32.0) / 1.8


def test_item_tables():
    """Every channel has items; the Fahrenheit items are temperature items; ids do not collide."""
    for items in (MIMIC3_ITEMS, MIMIC4_ITEMS):
        assert tuple(items) == CHANNELS
        flat = [i for ids in items.values() for i in ids]
        assert len(flat) == len(set(flat))
        assert FAHRENHEIT_ITEMS & set(flat) <= set(items["temperature"])
    assert set(FAHRENHEIT_ITEMS) <= set(MIMIC3_ITEMS["temperature"])
    assert all(i >= 220000 for ids in MIMIC4_ITEMS.values() for i in ids)


# --------------------------------------------------------------------------------------------------
# MIMIC-III v1.4
# --------------------------------------------------------------------------------------------------

PATIENTS_HEADER = "ROW_ID,SUBJECT_ID,GENDER,DOB,DOD,DOD_HOSP,DOD_SSN,EXPIRE_FLAG"
PATIENTS = [
    PATIENTS_HEADER,
    '1,101,"M",2060-03-15 00:00:00,,,,0',
    '2,102,"F",2080-01-01 00:00:00,2140-05-09 00:00:00,2140-05-09 00:00:00,,1',
    '3,103,"F",2115-06-01 00:00:00,,,,0',  # 14 at ICU admission: a minor
    '4,104,"M",1850-01-01 00:00:00,2150-06-20 00:00:00,2150-06-20 00:00:00,,1',  # > 89: shifted to ~300
    '5,105,"F",2070-01-01 00:00:00,,,,0',
]
ADMISSIONS_HEADER = ("ROW_ID,SUBJECT_ID,HADM_ID,ADMITTIME,DISCHTIME,DEATHTIME,ADMISSION_TYPE,"
                     "ADMISSION_LOCATION,DISCHARGE_LOCATION,INSURANCE,LANGUAGE,RELIGION,MARITAL_STATUS,ETHNICITY,EDREGTIME,EDOUTTIME,"
                     "DIAGNOSIS,HOSPITAL_EXPIRE_FLAG,HAS_CHARTEVENTS_DATA")


def adm(row: int, subject: int, hadm: int, admit: str, disch: str, death: str, flag: int) -> str:
    return (f'{row},{subject},{hadm},{admit},{disch},{death},"EMERGENCY","EMERGENCY ROOM ADMIT",'
            f'"{"DEAD/EXPIRED" if flag else "HOME"}","Medicare","ENGL","CATHOLIC","MARRIED","WHITE",,,'
            f'"SEPSIS, PNEUMONIA;TELEMETRY",{flag},1')


ADMISSIONS = [
    ADMISSIONS_HEADER,
    adm(1, 101, 1001, "2130-01-10 06:00:00", "2130-01-20 12:00:00", "", 0),
    adm(2, 102, 1002, "2140-05-01 08:00:00", "2140-05-09 00:00:00", "2140-05-09 00:00:00", 1),
    adm(3, 103, 1003, "2130-01-31 20:00:00", "2130-02-10 00:00:00", "", 0),
    adm(4, 104, 1004, "2150-03-01 00:00:00", "2150-03-05 00:00:00", "", 0),
    adm(5, 104, 1005, "2150-05-31 22:00:00", "2150-06-20 00:00:00", "2150-06-20 00:00:00", 1),
    adm(6, 105, 1006, "2160-01-01 00:00:00", "2160-01-09 00:00:00", "", 0),
]
ICUSTAYS_HEADER = ("ROW_ID,SUBJECT_ID,HADM_ID,ICUSTAY_ID,DBSOURCE,FIRST_CAREUNIT,LAST_CAREUNIT,FIRST_WARDID,"
                   "LAST_WARDID,INTIME,OUTTIME,LOS")
ICUSTAYS = [
    ICUSTAYS_HEADER,
    '1,102,1002,200002,"metavision","SICU","SICU",12,12,2140-05-01 10:30:00,2140-05-02 10:30:00,1.0000',
    '2,101,1001,200001,"carevue","MICU","MICU",52,52,2130-01-10 08:00:00,2130-01-13 08:00:00,3.0000',
    '3,103,1003,200003,"metavision","CCU","CCU",7,7,2130-02-01 00:00:00,2130-02-04 00:00:00,3.0000',  # minor
    '4,104,1004,200004,"carevue","MICU","MICU",52,52,2150-03-01 00:00:00,2150-03-01 23:58:34,0.9990',  # short
    '5,104,1005,200005,"metavision","MICU","MICU",52,52,2150-06-01 00:00:00,2150-06-05 02:57:42,4.1234',
    '6,105,1006,200006,"metavision","MICU","MICU",52,52,2160-01-01 02:00:00,,',  # no LOS: unknown outcome
]
CHART_HEADER = ("ROW_ID,SUBJECT_ID,HADM_ID,ICUSTAY_ID,ITEMID,CHARTTIME,STORETIME,CGID,VALUE,VALUENUM,"
                "VALUEUOM,WARNING,ERROR,RESULTSTATUS,STOPPED")
_SUBJECT = {200001: (101, 1001), 200002: (102, 1002), 200003: (103, 1003), 200004: (104, 1004),
            200005: (104, 1005), 200006: (105, 1006), 999999: (199, 1999)}


def ce(row: int, stay: int | None, item: int, time: str, valuenum: object, uom: str = "",
       error: str | None = None, value: str | None = None) -> str:
    """A CHARTEVENTS line: CareVue rows (item < 220000) have no WARNING / ERROR and a RESULTSTATUS /
    STOPPED; MetaVision rows have WARNING 0 and ERROR 0 unless given."""
    subject, hadm = _SUBJECT[stay if stay is not None else 200001]
    value = str(valuenum) if value is None else value
    if item < 220000:
        tail = f',{error or ""},"Manual","NotStopd"'
    else:
        tail = f'0,{error or 0},,'
    return (f'{row},{subject},{hadm},{"" if stay is None else stay},{item},{time},{time},14000,"{value}",'
            f'{valuenum},"{uom}",{tail}')


CHARTEVENTS = [
    CHART_HEADER,
    # 200001, CareVue, admitted 2130-01-10 08:00:00
    ce(1, 200001, 211, "2130-01-10 08:15:00", 80, "BPM"),
    ce(2, 200001, 51, "2130-01-10 08:15:00", 120, "mmHg"),
    ce(3, 200001, 8368, "2130-01-10 08:15:00", 60, "mmHg"),
    ce(4, 200001, 52, "2130-01-10 08:15:00", 80, "mmHg"),
    ce(5, 200001, 618, "2130-01-10 08:15:00", 16, "BPM"),
    ce(6, 200001, 678, "2130-01-10 08:15:00", 98.6, "Deg. F"),
    ce(7, 200001, 646, "2130-01-10 08:15:00", 97, "%"),
    ce(8, 200001, 211, "2130-01-10 08:45:00", 90, "BPM"),
    ce(9, 200001, 211, "2130-01-10 09:00:00", 350, "BPM"),  # out of range
    ce(10, 200001, 678, "2130-01-10 09:00:00", 130, "Deg. F"),  # > 120 F: out of range
    ce(11, 200001, 678, "2130-01-10 10:00:00", 70, "Deg. F"),  # 70 F is not > 70: out of range
    ce(12, 200001, 678, "2130-01-10 12:00:00", 120, "Deg. F"),  # 120 F is kept: 48.9 C
    ce(13, 200001, 198, "2130-01-10 09:00:00", 15, "points"),  # GCS: not a vital
    ce(14, 200001, 211, "2130-01-10 07:00:00", 85, "BPM"),  # -1 h: outside the window
    ce(15, 200001, 211, "2130-01-11 08:00:00", 85, "BPM"),  # 24 h: outside the window
    ce(16, 200001, 211, "2130-01-11 07:59:24", 84, "BPM"),  # 23.99 h: inside
    ce(17, 200001, 646, "2130-01-10 10:00:00", "", "%", value="Other/Remarks"),  # no value
    ce(18, None, 211, "2130-01-10 10:00:00", 72, "BPM"),  # no ICUSTAY_ID
    # 200002, MetaVision, admitted 2140-05-01 10:30:00
    ce(19, 200002, 220045, "2140-05-01 10:30:00", 110, "bpm"),
    ce(20, 200002, 220179, "2140-05-01 11:00:00", 95, "mmHg"),
    ce(21, 200002, 220180, "2140-05-01 11:00:00", 50, "mmHg"),
    ce(22, 200002, 220181, "2140-05-01 11:00:00", 65, "mmHg"),
    ce(23, 200002, 220210, "2140-05-01 11:00:00", 22, "insp/min"),
    ce(24, 200002, 223762, "2140-05-01 11:00:00", 38.2, "?C"),
    ce(25, 200002, 220277, "2140-05-01 11:00:00", 93, "%"),
    ce(26, 200002, 220045, "2140-05-01 12:30:00", 120, "bpm", error="1"),  # ERROR = 1
    ce(27, 200002, 223761, "2140-05-01 14:30:00", 100.4, "?F"),
    ce(28, 200002, 220045, "2140-05-02 10:27:00", 100, "bpm"),
    ce(29, 200002, 223762, "2140-05-01 12:00:00", 5.0, "?C"),  # 5 C: out of range
    # 200005, MetaVision, admitted 2150-06-01 00:00:00 (a patient over 89)
    ce(30, 200005, 220045, "2150-06-01 01:30:00", 70, "bpm"),
    # stays not in the cohort
    ce(31, 200003, 220045, "2130-02-01 01:00:00", 130, "bpm"),  # the minor
    ce(32, 200004, 211, "2150-03-01 01:00:00", 75, "BPM"),  # the short stay
    ce(33, 200006, 220045, "2160-01-01 03:00:00", 75, "bpm"),  # unknown outcome
    ce(34, 999999, 211, "2130-01-10 09:00:00", 75, "BPM"),  # not in ICUSTAYS
]

MIMIC3_EVENTS = [
    (0, 0.25, HR, 80), (0, 0.25, SBP, 120), (0, 0.25, DBP, 60), (0, 0.25, MBP, 80), (0, 0.25, RR, 16),
    (0, 0.25, TEMP, f2c(98.6)), (0, 0.25, SPO2, 97),
    (0, 0.75, HR, 90),
    (0, 4.0, TEMP, f2c(120)),
    (0, 23.99, HR, 84),
    (1, 0.0, HR, 110), (1, 0.5, SBP, 95), (1, 0.5, DBP, 50), (1, 0.5, MBP, 65), (1, 0.5, RR, 22),
    (1, 0.5, TEMP, 38.2), (1, 0.5, SPO2, 93),
    (1, 4.0, TEMP, f2c(100.4)),
    (1, 23.95, HR, 100),
    (2, 1.5, HR, 70),
]
MIMIC3_COUNTS = {"stays_read": 6, "minors": 1, "unknown_outcome": 1, "short_stays": 1, "rows_read": 34,
                 "vital_rows": 33, "outside_window": 2, "error_rows": 1, "no_value": 1, "out_of_range": 4,
                 "unknown_age": 0, "stays": 3, "events": 20}


def mimic3_root(root: Path, gz: bool = False, bom: bool = False, eol: str = "\n", **tables) -> Path:
    ext = ".csv.gz" if gz else ".csv"
    lines = {"PATIENTS": PATIENTS, "ADMISSIONS": ADMISSIONS, "ICUSTAYS": ICUSTAYS, "CHARTEVENTS": CHARTEVENTS}
    lines.update(tables)
    for name, rows in lines.items():
        for old in (root / f"{name}.csv", root / f"{name}.csv.gz"):
            old.unlink(missing_ok=True)
        write(root / f"{name}{ext}", rows, bom=bom, eol=eol)
    return root


def check_mimic3(c, ext: str = ".csv") -> None:
    assert c.source == "mimic3"
    assert c.stay_ids.tolist() == [200001, 200002, 200005]
    assert c.stay_ids.dtype == np.int64
    assert c.mortality.tolist() == [0, 1, 1] and c.mortality.dtype == np.int8
    np.testing.assert_allclose(c.los_days, np.array([3.0, 1.0, 4.1234], np.float32))
    assert c.los_days.dtype == np.float32
    check_events(c, MIMIC3_EVENTS)
    assert c.counts == MIMIC3_COUNTS
    assert sorted(p.name for p in c.files) == sorted(f"{n}{ext}" for n in
                                                     ("ICUSTAYS", "ADMISSIONS", "PATIENTS", "CHARTEVENTS"))


def test_mimic3_cohort_and_events(tmp_path):
    check_mimic3(read_mimic3(mimic3_root(tmp_path)))


def test_mimic3_gzip(tmp_path):
    c = read_mimic3(mimic3_root(tmp_path, gz=True))
    check_mimic3(c, ".csv.gz")


@pytest.mark.parametrize("bom, eol", [(True, "\n"), (False, "\r\n"), (True, "\r\n")])
def test_mimic3_bom_and_crlf(tmp_path, bom, eol):
    """A UTF-8 byte-order mark (a file saved by a spreadsheet) and Windows line ends read the same."""
    check_mimic3(read_mimic3(mimic3_root(tmp_path, bom=bom, eol=eol)))
    check_mimic3(read_mimic3(mimic3_root(tmp_path / "gz", gz=True, bom=bom, eol=eol)), ".csv.gz")


def test_mimic3_min_stay_and_window(tmp_path):
    mimic3_root(tmp_path)
    c = read_mimic3(tmp_path, min_stay_hours=0)
    assert c.stay_ids.tolist() == [200001, 200002, 200004, 200005]
    assert c.counts["short_stays"] == 0
    assert (c.events.stay == 2).sum() == 1  # 200004's HR at 1 h
    c = read_mimic3(tmp_path, window=4)  # stays of >= 4 h; events in [0, 4) h
    assert c.stay_ids.tolist() == [200001, 200002, 200004, 200005]
    assert (c.events.hours < 4).all()
    assert c.counts["outside_window"] == 6  # -1 h, 24 h, 23.99 h, 4 h (120 F); 4 h (100.4 F), 23.95 h
    assert c.counts["out_of_range"] == 4


def test_mimic3_bad_charttime_outside_vitals_is_ignored(tmp_path):
    """Chart times are parsed only for the vital rows; a non-vital row's odd time does not matter."""
    rows = CHARTEVENTS + [ce(35, 200001, 198, "not a time", 15)]
    c = read_mimic3(mimic3_root(tmp_path, CHARTEVENTS=rows))
    check_events(c, MIMIC3_EVENTS)


def test_mimic3_missing_table(tmp_path):
    mimic3_root(tmp_path)
    (tmp_path / "CHARTEVENTS.csv").unlink()
    with pytest.raises(DataFormatError, match=r"CHARTEVENTS\.csv or CHARTEVENTS\.csv\.gz.*"
                                              r"physionet\.org/content/mimiciii"):
        read_mimic3(tmp_path)
    with pytest.raises(DataFormatError, match=r"ICUSTAYS\.csv or ICUSTAYS\.csv\.gz"):
        read_mimic3(tmp_path / "nowhere")


def test_mimic3_missing_column(tmp_path):
    icu = [",".join(r.split(",")[:-1]) for r in ICUSTAYS]  # drop LOS
    with pytest.raises(DataFormatError, match=r"(?i)ICUSTAYS\.csv lacks column\(s\) LOS\b.*mimiciii"):
        read_mimic3(mimic3_root(tmp_path, ICUSTAYS=icu))
    pat = [PATIENTS_HEADER.replace(",DOB,", ",BIRTH,")] + PATIENTS[1:]
    with pytest.raises(DataFormatError, match=r"(?i)PATIENTS\.csv lacks column\(s\) DOB\b"):
        read_mimic3(mimic3_root(tmp_path, PATIENTS=pat))


def test_mimic3_bad_valuenum(tmp_path):
    rows = CHARTEVENTS + [ce(35, 200001, 211, "2130-01-10 09:30:00", "abc", "BPM")]
    with pytest.raises(DataFormatError,
                       match=r"CHARTEVENTS\.csv does not parse \(.*'VALUENUM'.*'abc'.*mimiciii"):
        read_mimic3(mimic3_root(tmp_path, CHARTEVENTS=rows))


def test_mimic3_bad_charttime(tmp_path):
    rows = CHARTEVENTS + [ce(35, 200001, 211, "2130-01-10 9h30", 80, "BPM")]
    with pytest.raises(DataFormatError, match=r"CHARTEVENTS\.csv has a chart time that is not a date and time"
                                              r".*mimiciii"):
        read_mimic3(mimic3_root(tmp_path, CHARTEVENTS=rows))


def test_mimic3_bad_intime(tmp_path):
    icu = ICUSTAYS + ['7,105,1006,200007,"carevue","MICU","MICU",52,52,yesterday,,2.0']
    with pytest.raises(DataFormatError, match=r"ICUSTAYS\.csv does not parse \(.*'INTIME'"):
        read_mimic3(mimic3_root(tmp_path, ICUSTAYS=icu))


def test_mimic3_duplicate_stay(tmp_path):
    icu = ICUSTAYS + ['7,101,1001,200001,"carevue","MICU","MICU",52,52,2130-01-10 08:00:00,'
                      '2130-01-13 08:00:00,3.0000']
    with pytest.raises(DataFormatError, match=r"ICUSTAYS\.csv lists an ICUSTAY_ID twice.*mimiciii"):
        read_mimic3(mimic3_root(tmp_path, ICUSTAYS=icu))


def test_header_with_spaces(tmp_path):
    icu = [ICUSTAYS_HEADER.replace(",", ", ")] + ICUSTAYS[1:]
    check_mimic3(read_mimic3(mimic3_root(tmp_path, ICUSTAYS=icu)))


# --------------------------------------------------------------------------------------------------
# MIMIC-IV
# --------------------------------------------------------------------------------------------------

M4_ICUSTAYS = [
    "subject_id,hadm_id,stay_id,first_careunit,last_careunit,intime,outtime,los",
    # anchor_age 16 in 2148, admitted 2150: 18, an adult
    '1,2001,30000001,"Medical Intensive Care Unit (MICU)","Medical Intensive Care Unit (MICU)",'
    "2150-03-01 12:00:00,2150-03-03 12:00:00,2",
    # anchor_age 17 in 2160, admitted 2160: a minor
    '2,2002,30000002,"Coronary Care Unit (CCU)","Coronary Care Unit (CCU)",2160-07-15 06:00:00,'
    "2160-07-20 18:00:00,5.5",
    '3,2003,30000003,"Trauma SICU (TSICU)","Trauma SICU (TSICU)",2170-01-01 00:00:00,'
    "2170-01-02 06:00:00,1.25",
    '3,2004,30000004,"Trauma SICU (TSICU)","Trauma SICU (TSICU)",2171-01-01 00:00:00,'
    "2171-01-01 12:00:00,0.5",  # 12 h: short
]
M4_ADMISSIONS = [
    "subject_id,hadm_id,admittime,dischtime,deathtime,admission_type,admit_provider_id,admission_location,"
    "discharge_location,insurance,language,marital_status,race,edregtime,edouttime,hospital_expire_flag",
    '1,2001,2150-03-01 08:00:00,2150-03-09 10:00:00,,"EW EMER.","P12345","EMERGENCY ROOM","HOME",'
    '"Medicare","ENGLISH","MARRIED","WHITE",,,0',
    '2,2002,2160-07-15 02:00:00,2160-07-25 10:00:00,,"URGENT","P23456","TRANSFER FROM HOSPITAL","HOME",'
    '"Other","ENGLISH","SINGLE","BLACK/AFRICAN AMERICAN",,,0',
    '3,2003,2169-12-31 20:00:00,2170-01-05 10:00:00,2170-01-05 10:00:00,"EW EMER.","P34567",'
    '"EMERGENCY ROOM","DIED","Medicare","ENGLISH","WIDOWED","WHITE",,,1',
    '3,2004,2170-12-31 20:00:00,2171-01-05 10:00:00,,"EW EMER.","P34567","EMERGENCY ROOM","HOME",'
    '"Medicare","ENGLISH","WIDOWED","WHITE",,,0',
]
M4_PATIENTS = [
    "subject_id,gender,anchor_age,anchor_year,anchor_year_group,dod",
    "1,F,16,2148,2008 - 2010,",
    "2,M,17,2160,2014 - 2016,",
    "3,M,91,2165,2017 - 2019,2170-01-05",
]
M4_CHART_HEADER = ("subject_id,hadm_id,stay_id,caregiver_id,charttime,storetime,itemid,value,valuenum,"
                   "valueuom,warning")


def ce4(subject: int, hadm: int, stay: int, time: str, item: int, valuenum: object, uom: str = "") -> str:
    return f'{subject},{hadm},{stay},1234,{time},{time},{item},"{valuenum}",{valuenum},"{uom}",0'


M4_CHART = [
    M4_CHART_HEADER,
    ce4(1, 2001, 30000001, "2150-03-01 12:30:00", 220045, 88, "bpm"),
    ce4(1, 2001, 30000001, "2150-03-01 13:00:00", 220050, 130, "mmHg"),
    ce4(1, 2001, 30000001, "2150-03-01 13:00:00", 220051, 70, "mmHg"),
    ce4(1, 2001, 30000001, "2150-03-01 13:00:00", 220052, 90, "mmHg"),
    ce4(1, 2001, 30000001, "2150-03-01 13:00:00", 224690, 18, "insp/min"),
    ce4(1, 2001, 30000001, "2150-03-01 13:00:00", 220277, 99, "%"),
    ce4(1, 2001, 30000001, "2150-03-01 13:00:00", 211, 77, "bpm"),  # a CareVue id: not a MIMIC-IV item
    ce4(1, 2001, 30000001, "2150-03-01 16:00:00", 223761, 100.4, "°F"),
    ce4(1, 2001, 30000001, "2150-03-01 20:00:00", 223762, 37.2, "°C"),
    ce4(1, 2001, 30000001, "2150-03-01 20:00:00", 225309, 125, "mmHg"),
    ce4(1, 2001, 30000001, "2150-03-02 12:00:00", 220045, 80, "bpm"),  # 24 h: outside the window
    ce4(1, 2001, 30000001, "2150-03-01 13:00:00", 223835, 40, "%"),  # FiO2: not a vital
    ce4(2, 2002, 30000002, "2160-07-15 07:00:00", 220045, 100, "bpm"),  # the minor
    ce4(3, 2003, 30000003, "2170-01-01 00:10:00", 220181, 75, "mmHg"),
    ce4(3, 2003, 30000003, "2170-01-01 02:00:00", 223761, 69.8, "°F"),  # below 70 F: out of range
    ce4(3, 2003, 30000003, "2170-01-01 03:00:00", 220210, 0, "insp/min"),  # 0: out of range
    ce4(3, 2003, 30000003, "2170-01-01 04:00:00", 220210, "", "insp/min"),  # no value
    ce4(3, 2004, 30000004, "2171-01-01 01:00:00", 220045, 60, "bpm"),  # the short stay
]


def mimic4_root(root: Path, ext: str = ".csv.gz", **tables) -> Path:
    lines = {"icu/icustays": M4_ICUSTAYS, "icu/chartevents": M4_CHART, "hosp/admissions": M4_ADMISSIONS,
             "hosp/patients": M4_PATIENTS}
    lines.update(tables)
    for name, rows in lines.items():
        write(root / f"{name}{ext}", rows)
    return root


@pytest.mark.parametrize("ext", [".csv.gz", ".csv"])
def test_mimic4_cohort_and_events(tmp_path, ext):
    c = read_mimic4(mimic4_root(tmp_path, ext))
    assert c.source == "mimic4"
    assert c.stay_ids.tolist() == [30000001, 30000003]
    assert c.mortality.tolist() == [0, 1]
    np.testing.assert_allclose(c.los_days, [2.0, 1.25])
    check_events(c, [
        (0, 0.5, HR, 88), (0, 1.0, SBP, 130), (0, 1.0, DBP, 70), (0, 1.0, MBP, 90), (0, 1.0, RR, 18),
        (0, 1.0, SPO2, 99), (0, 4.0, TEMP, f2c(100.4)), (0, 8.0, TEMP, 37.2), (0, 8.0, SBP, 125),
        (1, 1 / 6, MBP, 75),
    ])
    assert c.counts == {"stays_read": 4, "minors": 1, "unknown_outcome": 0, "short_stays": 1,
                        "rows_read": 18, "vital_rows": 16, "outside_window": 1, "no_value": 1,
                        "out_of_range": 2, "unknown_age": 0, "stays": 2, "events": 10}
    assert sorted(str(p.relative_to(tmp_path)) for p in c.files) == sorted(
        f"{n}{ext}" for n in ("icu/icustays", "icu/chartevents", "hosp/admissions", "hosp/patients"))


def test_mimic4_age_from_anchor(tmp_path):
    """Age is anchor_age + (year of ICU admission - anchor_year), not anchor_age alone."""
    pat = [M4_PATIENTS[0], "1,F,16,2151,2008 - 2010,", "2,M,17,2158,2014 - 2016,", M4_PATIENTS[3]]
    c = read_mimic4(mimic4_root(tmp_path, **{"hosp/patients": pat}))
    assert c.stay_ids.tolist() == [30000002, 30000003]  # 16 - 1 = 15: a minor; 17 + 2 = 19: an adult
    assert c.counts["minors"] == 1


def test_mimic4_stay_without_intime(tmp_path):
    icu = M4_ICUSTAYS + ['3,2004,30000005,"Trauma SICU (TSICU)","Trauma SICU (TSICU)",,,']
    c = read_mimic4(mimic4_root(tmp_path, **{"icu/icustays": icu}))
    assert c.stay_ids.tolist() == [30000001, 30000003]
    assert c.counts["unknown_age"] == 1  # MIMIC-IV's age needs the admission year


def test_mimic3_stay_without_intime(tmp_path):
    """The MIMIC-III reader's behaviour that the MIMIC-IV one should match."""
    icu = ICUSTAYS + ['7,105,1006,200007,"carevue","MICU","MICU",52,52,,,2.0']
    c = read_mimic3(mimic3_root(tmp_path, ICUSTAYS=icu))
    assert c.stay_ids.tolist() == [200001, 200002, 200005]
    assert c.counts == {**MIMIC3_COUNTS, "stays_read": 7, "unknown_outcome": 2}


def test_mimic4_missing_table(tmp_path):
    mimic4_root(tmp_path)
    (tmp_path / "icu" / "chartevents.csv.gz").unlink()
    with pytest.raises(DataFormatError, match=r"icu/chartevents\.csv or icu/chartevents\.csv\.gz.*"
                                              r"physionet\.org/content/mimiciv"):
        read_mimic4(tmp_path)


def test_mimic4_duplicate_stay(tmp_path):
    icu = M4_ICUSTAYS + [M4_ICUSTAYS[1]]
    with pytest.raises(DataFormatError, match=r"icustays\.csv\.gz lists a stay_id twice.*mimiciv"):
        read_mimic4(mimic4_root(tmp_path, **{"icu/icustays": icu}))


# --------------------------------------------------------------------------------------------------
# map_csv / stream_csv / csv_header
# --------------------------------------------------------------------------------------------------

BLOCK_COLUMNS = {"ID": pa.int64(), "value": pa.float64(), "Name": pa.string(), "ts": pa.timestamp("s")}


@pytest.fixture(scope="module")
def big_csv(tmp_path_factory) -> Path:
    """About 3.5 MB, 60k rows: several 1 MiB blocks; quoted commas, empty values, a column not read."""
    path = tmp_path_factory.mktemp("blocks") / "big.csv"
    rng = np.random.default_rng(0)
    vals = np.round(rng.normal(50, 20, 60_000), 3)
    lines = ["id,name,value,ts,extra"]
    for i, v in enumerate(vals):
        value = "" if i % 97 == 0 else repr(float(v))
        name = f'"n{i}, x"' if i % 3 == 0 else ("" if i % 11 == 0 else f"n{i}")
        lines.append(f"{i},{name},{value},2101-01-{1 + i % 28:02d} {i % 24:02d}:{i % 60:02d}:07,{i * 7}")
    path.write_text("\n".join(lines) + "\n")
    gz = path.with_name("big.csv.gz")
    with open(path, "rb") as src, gzip.open(gz, "wb", compresslevel=1) as dst:
        shutil.copyfileobj(src, dst)
    return path


def reference(path: Path) -> dict[str, list]:
    convert = pacsv.ConvertOptions(include_columns=["id", "value", "name", "ts"],
                                   column_types={"id": pa.int64(), "value": pa.float64(), "name": pa.string(),
                                                 "ts": pa.timestamp("s")}, strings_can_be_null=True)
    t = pacsv.read_csv(path, convert_options=convert)
    return {"ID": t.column("id").to_pylist(), "value": t.column("value").to_pylist(),
            "Name": t.column("name").to_pylist(), "ts": t.column("ts").to_pylist()}


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("workers", [1, 3])
def test_map_csv_blocks_match_whole_file(big_csv, gz, workers):
    path = big_csv.with_name("big.csv.gz") if gz else big_csv
    batches = list(map_csv(path, BLOCK_COLUMNS, lambda b: b, "T", "W", block_mb=1, workers=workers))
    assert len(batches) >= 3
    assert all(b.schema.names == list(BLOCK_COLUMNS) for b in batches)
    types = list(BLOCK_COLUMNS.values())
    assert all([b.schema.field(n).type for n in BLOCK_COLUMNS] == types for b in batches)
    got = pa.Table.from_batches(batches)
    ref = reference(big_csv)
    assert got.num_rows == 60_000
    for name in BLOCK_COLUMNS:
        assert got.column(name).to_pylist() == ref[name], name
    assert got.column("value").null_count == len(range(0, 60_000, 97))
    # fn runs per block, results come back in file order
    def first_and_size(b: pa.RecordBatch) -> tuple[int, int]:
        return b.column("id")[0].as_py(), b.num_rows

    sizes = list(map_csv(path, {"id": pa.int64()}, first_and_size, "T", "W", block_mb=1, workers=workers))
    starts = np.cumsum([0] + [n for _, n in sizes[:-1]])
    assert [s for s, _ in sizes] == starts.tolist()
    assert sum(n for _, n in sizes) == 60_000


def test_stream_csv_and_header(tmp_path):
    p = write(tmp_path / "t.csv.gz", ["A,b", "1,x", "2,"], bom=True)
    assert csv_header(p) == ["A", "b"]
    got = pa.Table.from_batches(list(stream_csv(p, {"b": pa.string(), "a": pa.int64()}, "T", "W")))
    assert got.schema.names == ["b", "a"]
    assert got.column("a").to_pylist() == [1, 2] and got.column("b").to_pylist() == ["x", None]
    only_header = write(tmp_path / "h.csv", ["A,b"])
    assert list(stream_csv(only_header, {"a": pa.int64()}, "T", "W")) == []
    no_eol = tmp_path / "n.csv"
    no_eol.write_text("A,b\n1,x\n2,y")  # no line end after the last row
    got = pa.Table.from_batches(list(stream_csv(no_eol, {"a": pa.int64()}, "T", "W")))
    assert got.column("a").to_pylist() == [1, 2]
    empty = tmp_path / "e.csv"
    empty.write_text("")
    with pytest.raises(DataFormatError, match=r"e\.csv is empty"):
        csv_header(empty)
    bad = tmp_path / "bad.csv.gz"
    bad.write_bytes(b"not gzip at all")
    with pytest.raises(DataFormatError, match=r"bad\.csv\.gz cannot be read as a CSV"):
        csv_header(bad)


# --------------------------------------------------------------------------------------------------
# build_grid
# --------------------------------------------------------------------------------------------------


def events(*rows: tuple[int, float, int, float]) -> Events:
    s, h, c, v = zip(*rows, strict=True)
    return Events(np.array(s, np.int64), np.array(h, np.float64), np.array(c, np.int8),
                  np.array(v, np.float32))


def test_build_grid_hand_cases():
    ev = events(
        (0, 0.2, HR, 80), (0, 0.8, HR, 91),  # hour 0: the mean 85.5
        (0, 3.0, HR, 70),  # hours 1, 2 carried from hour 0; 3 observed; 4, 5 carried
        (0, 6.0, HR, 200),  # hour == window: dropped
        (0, 2.5, SBP, 120),  # hours 0, 1: the fill
        (0, 5.99, SBP, 100), (0, 5.5, SBP, 110),  # the last hour: their mean
        (1, -0.5, HR, 60),  # before admission: dropped
        (1, 1.0, SPO2, 95),
        (2, 0.0, HR, 99),  # a stay index past n_stays: dropped
    )
    fill = np.arange(100, 107, dtype=np.float32)
    values, mask = build_grid(ev, 2, 6, fill)
    assert values.shape == mask.shape == (2, 6, 7)
    assert values.dtype == mask.dtype == np.float32
    assert values[0, :, HR].tolist() == [85.5, 85.5, 85.5, 70, 70, 70]
    assert mask[0, :, HR].tolist() == [1, 0, 0, 1, 0, 0]
    assert values[0, :, SBP].tolist() == [fill[SBP], fill[SBP], 120, 120, 120, 105]
    assert mask[0, :, SBP].tolist() == [0, 0, 1, 0, 0, 1]
    assert values[1, :, HR].tolist() == [fill[HR]] * 6 and mask[1, :, HR].sum() == 0
    assert values[1, :, SPO2].tolist() == [fill[SPO2], 95, 95, 95, 95, 95]
    assert mask.sum() == 5 and mask[1, 1, SPO2] == 1
    for c in (DBP, MBP, RR, TEMP):
        assert values[:, :, c].tolist() == [[fill[c]] * 6] * 2
    # the default fill is 0; NaN as fill stays NaN before the first observation
    values0, mask0 = build_grid(ev, 2, 6)
    assert values0[0, :2, SBP].tolist() == [0, 0] and np.array_equal(mask0, mask)
    nan_values, _ = build_grid(ev, 2, 6, np.full(7, np.nan, np.float32))
    assert np.isnan(nan_values[0, :2, SBP]).all() and nan_values[0, 2, SBP] == 120
    # a one-hour window keeps hour 0 only
    v1, m1 = build_grid(ev, 2, 1, fill)
    assert v1[0, 0, HR] == 85.5 and m1.sum() == 1
    # no events at all
    ve, me = build_grid(Events.empty(), 3, 4, fill)
    assert me.sum() == 0 and np.array_equal(ve, np.broadcast_to(fill, (3, 4, 7)))


def test_build_grid_bad_arguments():
    with pytest.raises(UserError, match="window"):
        build_grid(Events.empty(), 1, 0)
    with pytest.raises(ValueError, match="fill"):
        build_grid(Events.empty(), 1, 4, np.zeros(6, np.float32))


# --------------------------------------------------------------------------------------------------
# the synthetic MIMIC-III
# --------------------------------------------------------------------------------------------------

#: seed 0: with seed 1, 300 stays happen to draw no minor (the writer makes about 1 %)
SYN = SyntheticMimic(n_stays=300, seed=0)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    return write_synthetic_mimic3(tmp_path_factory.mktemp("syn") / "a", SYN)


def test_synthetic_read_back(synthetic):
    names = ["ADMISSIONS.csv", "CHARTEVENTS.csv", "ICUSTAYS.csv", "PATIENTS.csv"]
    assert sorted(p.name for p in synthetic.iterdir()) == names
    assert csv_header(synthetic / "CHARTEVENTS.csv") == CHART_HEADER.split(",")
    assert csv_header(synthetic / "ICUSTAYS.csv") == ICUSTAYS_HEADER.split(",")
    assert csv_header(synthetic / "ADMISSIONS.csv") == ADMISSIONS_HEADER.split(",")
    assert csv_header(synthetic / "PATIENTS.csv") == PATIENTS_HEADER.split(",")
    c = read_mimic3(synthetic)
    k = c.counts
    assert k["stays_read"] == 300
    for key in ("minors", "short_stays", "outside_window", "error_rows", "out_of_range"):
        assert k[key] > 0, key
    assert k["unknown_outcome"] == 0
    assert len(c.stay_ids) == 300 - k["minors"] - k["short_stays"]
    assert 0.05 <= c.mortality.mean() <= 0.16
    assert (np.bincount(c.events.channel, minlength=len(CHANNELS)) > 0).all()
    assert (c.events.hours >= 0).all() and (c.events.hours < SYN.window).all()
    assert c.los_days.min() * 24 >= SYN.window
    assert np.array_equal(np.unique(c.events.stay), np.arange(len(c.stay_ids)))
    # both temperature units, converted: plausible Celsius only
    t = c.events.value[c.events.channel == TEMP]
    assert 30 < t.min() and t.max() < 45


def test_synthetic_is_deterministic(synthetic, tmp_path):
    again = write_synthetic_mimic3(tmp_path / "b", SYN)
    for name in ("CHARTEVENTS.csv", "ICUSTAYS.csv", "ADMISSIONS.csv", "PATIENTS.csv"):
        assert (again / name).read_bytes() == (synthetic / name).read_bytes(), name
    other = write_synthetic_mimic3(tmp_path / "c", SyntheticMimic(n_stays=300, seed=1))
    assert (other / "CHARTEVENTS.csv").read_bytes() != (synthetic / "CHARTEVENTS.csv").read_bytes()


# --------------------------------------------------------------------------------------------------
# ClinicalSeries (imported inside the tests: torch and lightning take seconds to import)
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


def loader_arrays(loader) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    batches = list(loader)
    return tuple(np.concatenate([b[k].numpy() for b in batches]) for k in ("x", "mask", "y"))


def test_clinical_series_synthetic(cache, monkeypatch):
    from harness.datasets.clinical import ClinicalSeries

    dm = ClinicalSeries(synthetic={"n_stays": 300}, cache_dir=str(cache))
    dm.prepare_data()
    info = dm.info
    n = len(dm.grid["stay_ids"])
    assert n > 200
    assert info.n_train + info.n_val + info.n_test == n
    assert info.channels == list(CHANNELS) and info.window == 24 and info.task == "mortality"
    assert info.source == "mimic3" and info.n_channels == 7
    assert info.train_positives > 0
    x, mask, y = loader_arrays(dm.train_dataloader())
    assert x.shape == mask.shape == (info.n_train, 24, 7) and y.shape == (info.n_train,)
    assert int(y.sum()) == info.train_positives
    assert not np.isnan(x).any()
    for c in range(7):
        obs = x[..., c][mask[..., c] > 0]
        assert abs(obs.mean()) < 0.1, CHANNELS[c]
        assert abs(obs.std() - 1) < 0.1, CHANNELS[c]
    xa, ya = info.arrays("train")
    assert xa.shape == (info.n_train, 24, 7) and int(ya.sum()) == info.train_positives
    for split, size in (("val", info.n_val), ("test", info.n_test)):
        loader = dm.val_dataloader() if split == "val" else dm.test_dataloader()
        _, _, ys = loader_arrays(loader)
        assert len(ys) == size and ys.sum() > 0, split
    with pytest.raises(UserError, match="test"):
        info.arrays("test")
    # the same arguments: the grid comes from the cache, the reader is not called
    import harness.datasets.clinical as clinical

    def boom(*a, **k):
        raise AssertionError("read_cohort called: the cache was not used")

    monkeypatch.setattr(clinical, "read_cohort", boom)
    dm2 = ClinicalSeries(synthetic={"n_stays": 300}, cache_dir=str(cache))
    dm2.prepare_data()
    info2 = dm2.info
    assert (info2.n_train, info2.n_val, info2.n_test) == (info.n_train, info.n_val, info.n_test)
    assert info2.mean == info.mean and info2.std == info.std
    assert np.array_equal(info2.arrays("val")[0].numpy(), info.arrays("val")[0].numpy())


def test_clinical_series_los_task(cache):
    from harness.datasets.clinical import ClinicalSeries, stratified_split

    dm = ClinicalSeries(synthetic={"n_stays": 300}, cache_dir=str(cache), task="los")
    info = dm.info
    los = dm.grid["los_days"].numpy()
    y = (los > 3.0).astype(np.int64)
    assert 0 < y.sum() < len(y)
    idx = stratified_split(y, 0.2, 0.1, 0)
    assert info.arrays("train")[1].numpy().tolist() == y[idx["train"]].tolist()
    assert info.arrays("val")[1].numpy().tolist() == y[idx["val"]].tolist()
    assert loader_arrays(dm.test_dataloader())[2].tolist() == y[idx["test"]].tolist()
    assert info.task == "los" and info.train_positives == int(y[idx["train"]].sum())


def test_stratified_split():
    from harness.datasets.clinical import stratified_split

    y = np.array([0] * 90 + [1] * 10)
    s = stratified_split(y, 0.2, 0.1, 3)
    assert sorted(np.concatenate(list(s.values())).tolist()) == list(range(100))
    assert [int(y[s[k]].sum()) for k in ("train", "val", "test")] == [7, 1, 2]
    assert [len(s[k]) for k in ("train", "val", "test")] == [72, 8, 20]
    assert all(np.array_equal(a, b) for a, b in zip(s.values(), stratified_split(y, 0.2, 0.1, 3).values(),
                                                     strict=True))


def test_clinical_series_bad_arguments(tmp_path):
    from harness.datasets.clinical import ClinicalSeries

    with pytest.raises(UserError, match="layout must be one of"):
        ClinicalSeries(layout="mimic5", cache_dir=str(tmp_path))
    with pytest.raises(UserError, match="no such directory"):
        ClinicalSeries(data_dir=str(tmp_path / "missing"), cache_dir=str(tmp_path))
    with pytest.raises(UserError, match="reads real data"):
        ClinicalSeries(layout="mimic4", cache_dir=str(tmp_path))
    with pytest.raises(UserError, match="task must be one of"):
        ClinicalSeries(task="sepsis", cache_dir=str(tmp_path))
    with pytest.raises(UserError, match="window"):
        ClinicalSeries(window=0, cache_dir=str(tmp_path))


def test_clinical_series_real_layout(tmp_path):
    """DATA= a MIMIC-III folder: the reader's cohort on the grid; a folder without the tables names them."""
    from harness.datasets.clinical import ClinicalSeries

    root = mimic3_root(tmp_path / "data")
    dm = ClinicalSeries(data_dir=str(root), cache_dir=str(tmp_path / "cache"))
    g = dm.grid
    assert g["stay_ids"].tolist() == [200001, 200002, 200005]
    assert g["counts"] == MIMIC3_COUNTS
    assert g["mask"][0, 0, HR] == 1 and g["values"][0, 0, HR] == 85  # 80 and 90 in hour 0
    assert np.isnan(g["values"][2, 0, HR].item()) and g["values"][2, 1, HR] == 70
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataFormatError, match=r"ICUSTAYS\.csv or ICUSTAYS\.csv\.gz"):
        ClinicalSeries(data_dir=str(empty), cache_dir=str(tmp_path / "cache")).prepare_data()


def test_grid_from_charting_rows(tmp_path):
    """Hand-written CHARTEVENTS rows to the hourly grid: irregular times (two readings in one
    hour averaged), Fahrenheit converted, out-of-range values and ERROR = 1 rows absent from the
    mask, carry-forward over missing hours, the fill before a channel's first reading."""
    c = read_mimic3(mimic3_root(tmp_path))
    fill = np.arange(1, 8, dtype=np.float32) * 1000
    values, mask = build_grid(c.events, len(c.stay_ids), 24, fill=fill)
    hr, temp = values[..., HR], values[..., TEMP]
    # stay 200001: HR 80 at 0:15 and 90 at 0:45 -> 85; 350 at 1:00 dropped -> carried; 84 at 23:59
    assert hr[0, 0] == 85 and mask[0, 0, HR] == 1
    assert hr[0, 1] == 85 and mask[0, 1, HR] == 0
    assert hr[0, 22] == 85 and hr[0, 23] == 84 and mask[0, 23, HR] == 1
    # 98.6 F at 0:15 -> 37 C; 130 F (1:00) and 70 F (2:00) dropped; 120 F at 4:00 -> 48.9 C
    np.testing.assert_allclose(temp[0, :4], [37.0] * 4, atol=1e-4)
    np.testing.assert_allclose(temp[0, 4:], [(120 - 32) / 1.8] * 20, atol=1e-4)
    assert mask[0, :, TEMP].tolist() == [1, 0, 0, 0, 1] + [0] * 19
    # stay 200002: the ERROR = 1 reading at 2:00 leaves hour 2 unobserved; 5 C at 1:30 dropped
    assert hr[1, 2] == 110 and mask[1, 2, HR] == 0
    assert temp[1, 1] == pytest.approx(38.2) and mask[1, 1, TEMP] == 0
    assert temp[1, 4] == pytest.approx((100.4 - 32) / 1.8, abs=1e-4)
    # stay 200005: one HR reading at 1:30; before it, and every other channel, the fill
    assert hr[2, 0] == fill[HR] and hr[2, 1] == 70 and hr[2, 23] == 70
    assert (values[2, :, SBP] == fill[SBP]).all() and mask[2, :, SBP].sum() == 0
