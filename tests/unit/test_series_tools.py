"""The single-series CSV tools are strictly online and keep rows, order and extra columns."""

import contextlib
import csv
import math
import os
import random
import stat
import threading
from pathlib import Path

import pytest

from app.offline.series_file import SeriesColumns, SeriesFileError, parse_timestamp
from app.offline.series_tools import forecast_series, score_anomalies
from app.offline.whole_file import names_a_descriptor


def write_series(path: Path, rows: int, spike_at: int | None = None) -> None:
    rng = random.Random(5)
    with path.open("w") as fh:
        fh.write("timestamp,value,host\n")
        for i in range(rows):
            value = 50 + 20 * math.sin(2 * math.pi * i / 288) + rng.gauss(0, 2)
            if spike_at is not None and i == spike_at:
                value += 200
            text = "" if i == 7 else f"{value:.4f}"  # one missing value
            fh.write(
                f"2026-01-01 00:00:00,{text},h{i % 3}\n".replace(
                    "2026-01-01 00:00:00", str(1_767_225_600 + i * 300)
                )
            )


def read(path: Path) -> list[list[str]]:
    with path.open() as fh:
        return list(csv.reader(fh))


def test_score_anomalies_is_online_and_preserves_rows(tmp_path: Path) -> None:
    full, short = tmp_path / "full.csv", tmp_path / "short.csv"
    write_series(full, 1500, spike_at=1200)
    lines = full.read_text().splitlines()
    short.write_text("\n".join(lines[:1001]) + "\n")
    score_anomalies(full, tmp_path / "full_out.csv")
    score_anomalies(short, tmp_path / "short_out.csv")
    out_full, out_short = read(tmp_path / "full_out.csv"), read(tmp_path / "short_out.csv")
    assert out_full[0] == ["timestamp", "value", "host", "anomaly_score", "is_anomaly"]
    assert len(out_full) == 1501
    assert out_full[: len(out_short)] == out_short  # truncation never changes earlier rows
    assert [r[:3] for r in out_full[1:]] == [r.split(",") for r in lines[1:]]
    scores = [float(r[3]) for r in out_full[1:] if r[3]]
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert out_full[8][3] == ""  # the missing value stays missing
    alarms = [i for i, r in enumerate(out_full[1:]) if r[4] == "1"]
    assert 1200 in alarms


def test_forecast_is_online_and_shaped(tmp_path: Path) -> None:
    full, short = tmp_path / "full.csv", tmp_path / "short.csv"
    write_series(full, 900)
    lines = full.read_text().splitlines()
    short.write_text("\n".join(lines[:601]) + "\n")
    forecast_series(full, tmp_path / "f.csv", horizon=4, level=0.8)
    forecast_series(short, tmp_path / "s.csv", horizon=4, level=0.8)
    out_full, out_short = read(tmp_path / "f.csv"), read(tmp_path / "s.csv")
    assert out_full[0][3:] == [f"{p}_{h}" for p in ("yhat", "lo", "hi") for h in range(1, 5)]
    assert len(out_full) == 901 and out_full[: len(out_short)] == out_short
    assert all(v == "" for v in out_full[1][3:])  # row 0: no forecast yet
    last = [float(v) for v in out_full[-1][3:]]
    yhat, lo, hi = last[0:4], last[4:8], last[8:12]
    assert all(lo[h] <= yhat[h] <= hi[h] for h in range(4))
    # The forecast of the next row is close to what a seasonal series does next.
    errors = []
    for i in range(700, 899):
        predicted = float(out_full[i + 1][3])
        actual = float(out_full[i + 2][1])
        errors.append(abs(predicted - actual))
    assert sum(errors) / len(errors) < 4.0  # noise sd is 2: MAE near 1.6, naive drift is worse


def test_forecasts_after_missing_values_are_for_the_rows_after_them(tmp_path: Path) -> None:
    """``yhat_h`` of row i is always for row i+h: after missing values, the forecast made at
    the last row learnt, moved along by the rows since (its last steps empty)."""
    source, target = tmp_path / "in.csv", tmp_path / "out.csv"
    rows = [f"{1_767_225_600 + i * 300},{50 + 10 * math.sin(i / 9)}" for i in range(400)]
    rows[250] = rows[250].split(",")[0] + ","  # data rows 250 and 251 have no value
    rows[251] = rows[251].split(",")[0] + ",n/a"
    source.write_text("timestamp,value\n" + "\n".join(rows) + "\n")
    forecast_series(source, target, 4, 0.8)
    out = [r[2:] for r in read(target)[1:]]
    made = out[249]  # yhat_1..4, lo_1..4, hi_1..4 at the last row learnt
    for missing, skip in ((250, 1), (251, 2)):
        expected = [*made[skip:4], *[""] * skip]
        assert out[missing][0:4] == expected
        assert out[missing][4:8] == [*made[4 + skip : 8], *[""] * skip]
    assert all(v != "" for v in out[252])  # learning again


def test_forecasts_keep_to_the_rows_times_around_bad_and_late_rows(tmp_path: Path) -> None:
    """An unreadable row between the first two does not double the spacing, and a row older
    than the last one learnt gets the forecasts for the steps after its own time."""
    source, target = tmp_path / "in.csv", tmp_path / "out.csv"
    rows = [f"{1_767_225_600 + i * 60},{50 + 10 * math.sin(i / 9)}" for i in range(300)]
    rows[1] = rows[1].replace(",", ',"', 1)  # its quote never closes
    late = rows[200].split(",")[0]
    rows.insert(251, f"{late},55")  # 51 steps older than the row before it
    source.write_text("timestamp,value\n" + "\n".join(rows) + "\n")
    forecast_series(source, target, 3, 0.8)
    out = [r[2:] for r in read(target)[1:]]
    assert all(v != "" for v in out[150])  # learning at one-minute steps, not two
    made = out[250]
    assert out[251][0:3] == ["", "", ""]  # its next steps are before the forecast's first
    assert out[252][0:3] != made[0:3]  # learning goes on from the rows in order


def test_bad_files_are_one_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("time,val\n1,2\n")
    with pytest.raises(SeriesFileError, match="missing column 'timestamp'"):
        score_anomalies(bad, tmp_path / "o.csv")
    bad.write_text("timestamp,value\nyesterday,2\n")
    with pytest.raises(SeriesFileError, match="row 2"):
        forecast_series(bad, tmp_path / "o.csv", 3, 0.8)


def test_a_semicolon_export_with_its_own_column_names_scores_like_the_plain_csv(
    tmp_path: Path,
) -> None:
    """A spreadsheet export where the decimal mark is a comma: ``;`` between cells, ``12,5``
    for 12.5, and columns named by the exporter; its scores and forecasts are the plain file's,
    written back in its own delimiter."""
    plain, export = tmp_path / "plain.csv", tmp_path / "export.csv"
    write_series(plain, 700, spike_at=600)
    rows = read(plain)
    with export.open("w") as fh:
        fh.write("Host;Time;CPU %\n")
        for ts, value, host in rows[1:]:
            fh.write(f"{host};{ts};{value.replace('.', ',')}\n")
    columns = SeriesColumns("time", "cpu %")
    score_anomalies(plain, tmp_path / "plain_out.csv")
    score_anomalies(export, tmp_path / "export_out.csv", columns=columns)
    forecast_series(plain, tmp_path / "plain_fc.csv", 3, 0.8)
    forecast_series(export, tmp_path / "export_fc.csv", 3, 0.8, columns=columns)
    with (tmp_path / "export_out.csv").open() as fh:
        scored = list(csv.reader(fh, delimiter=";"))
    assert scored[0] == ["Host", "Time", "CPU %", "anomaly_score", "is_anomaly"]
    plain_scores = [r[3:] for r in read(tmp_path / "plain_out.csv")[1:]]
    assert [r[3:] for r in scored[1:]] == [[x.replace(".", ","), a] for x, a in plain_scores]
    assert any(r[4] == "1" for r in scored[1:])
    with (tmp_path / "export_fc.csv").open() as fh:
        forecasts = [r[3:] for r in csv.reader(fh, delimiter=";")]
    plain_forecasts = [
        [x.replace(".", ",") for x in r[3:]] for r in read(tmp_path / "plain_fc.csv")
    ]
    assert forecasts == plain_forecasts  # written with the file's decimal comma
    with pytest.raises(SeriesFileError, match="name yours with --value-column"):
        score_anomalies(export, tmp_path / "o.csv", columns=SeriesColumns("time", "value"))


def test_the_header_tells_the_delimiter_and_a_comma_header_stays_comma_separated(
    tmp_path: Path,
) -> None:
    plain = tmp_path / "plain.csv"
    write_series(plain, 400, spike_at=300)
    rows = read(plain)
    score_anomalies(plain, tmp_path / "plain_out.csv")
    expected = [r[3:] for r in read(tmp_path / "plain_out.csv")]

    def scores(text: str, columns: SeriesColumns, delimiter: str = ",") -> list[list[str]]:
        source, out = tmp_path / "in.csv", tmp_path / "out.csv"
        source.write_text(text)
        score_anomalies(source, out, columns=columns)
        with out.open() as fh:
            rows = csv.reader(fh, delimiter=delimiter)  # decimal commas where the input had them
            return [[cell.replace(",", ".") for cell in r[3:]] for r in rows]

    body = "".join(f"{ts};{value.replace('.', ',')};{host}\n" for ts, value, host in rows[1:])
    # a comma-separated header whose names hold semicolons: comma, as it always was
    names = "timestamp,value,env=prod;team=core;tier=1\n"
    assert (
        scores(names + "".join(",".join(r) + "\n" for r in rows[1:]), SeriesColumns()) == expected
    )
    # names with commas in quotes; blank lines before the header
    quoted = '\n\n"Zeit, UTC";"Wert, kWh";host\n' + body
    assert scores(quoted, SeriesColumns("zeit, utc", "wert, kwh"), ";") == expected
    # Excel's line naming the delimiter
    assert scores("sep=;\nts;value;host\n" + body, SeriesColumns("ts"), ";") == expected
    # names with commas outside quotes read as a comma-separated header: --delimiter says ';'
    unquoted = "Zeit;CPU, %;host\n" + body
    with pytest.raises(SeriesFileError, match="split at ',', is \\['Zeit;CPU', ' %;host'\\]"):
        scores(unquoted, SeriesColumns("zeit", "cpu, %"))
    assert scores(unquoted, SeriesColumns("zeit", "cpu, %", ";"), ";") == expected


def test_thousands_read_by_the_files_own_decimal_mark(tmp_path: Path) -> None:
    """``1.000`` is a thousand where the file's numbers show a decimal comma (``1.234,5``),
    and one where they show a point (``0.25``); an export's trailing delimiter and empty rows
    before the header change nothing."""
    source, out = tmp_path / "in.csv", tmp_path / "out.csv"
    values = [1000 + 250 * (i % 4) for i in range(300)]
    german = [f"{v // 1000}.{v % 1000:03d}" for v in values]  # 1.000, 1.250, 1.500, 1.750
    german[5] = "1.100,5"
    source.write_text(
        ";;\nsep=;\nts;value\n"  # rows end in a delimiter, the header does not
        + "".join(f"{1_767_225_600 + i * 60};{g};\n" for i, g in enumerate(german))
        + ";;\n"  # a spreadsheet's empty row: no data
    )
    score_anomalies(source, out, columns=SeriesColumns("ts", delimiter=";"))
    with out.open() as fh:
        rows = list(csv.reader(fh, delimiter=";"))
    assert rows[0] == ["ts", "value", "anomaly_score", "is_anomaly"]
    assert all(len(r) == 4 and r[2] != "" for r in rows[101:])  # aligned, every value read
    plain = tmp_path / "plain.csv"
    numbers = [f"{v:.1f}" if i != 5 else "1100.5" for i, v in enumerate(values)]
    plain.write_text(
        "ts,value\n" + "".join(f"{1_767_225_600 + i * 60},{x}\n" for i, x in enumerate(numbers))
    )
    score_anomalies(plain, tmp_path / "plain_out.csv", columns=SeriesColumns("ts"))
    scored = [[cell.replace(",", ".") for cell in r[2:]] for r in rows[1:]]  # 0,25 -> 0.25
    assert scored == [r[2:] for r in read(tmp_path / "plain_out.csv")[1:]]
    assert "," in rows[-1][2]  # written with the file's decimal comma
    source.write_text(
        "ts\tvalue\n"
        + "".join(f"{1_767_225_600 + i * 60}\t{x}\n" for i, x in enumerate(["0.25", "1.000"] * 100))
    )
    score_anomalies(source, out, columns=SeriesColumns("ts"))
    assert {r.split("\t")[1] for r in out.read_text().splitlines()[1:]} == {"0.25", "1.000"}
    assert score_anomalies(source, out, columns=SeriesColumns("ts")) == 200


def test_a_file_that_is_no_series_is_an_error_not_an_empty_output(tmp_path: Path) -> None:
    source, out = tmp_path / "in.csv", tmp_path / "out.csv"
    source.write_text('timestamp,value\n1795586400,"56,9"\n1795586460,\n1795586520,"57,1"\n')
    with pytest.raises(SeriesFileError, match="no value in column 'value' is a number \\(row 2"):
        score_anomalies(source, out)
    with pytest.raises(SeriesFileError, match="no value in column 'value' is a number"):
        forecast_series(source, out, 3, 0.8)
    assert not out.exists()
    source.write_text("timestamp,value\n1795586400,\n1795586460,56.9\n")
    assert score_anomalies(source, out) == 2  # missing values beside a number are fine
    newest_first = [f"{1795586400 + 60 * i},{50 + i % 3}" for i in reversed(range(50))]
    source.write_text("timestamp,value\n" + "\n".join(newest_first) + "\n")
    with pytest.raises(SeriesFileError, match=r"49 rows are earlier .* sort the rows oldest first"):
        forecast_series(source, out, 3, 0.8)
    newest_first[10], newest_first[11] = newest_first[11], newest_first[10]  # one row late
    source.write_text("timestamp,value\n" + "\n".join(reversed(newest_first)) + "\n")
    assert score_anomalies(source, out) == 50
    half = [f"{1795586400 + 60 * i},{50 + i % 3}" for i in [*range(24), *reversed(range(24, 50))]]
    source.write_text("timestamp,value\n" + "\n".join(half) + "\n")  # 25 back, 24 forward
    with pytest.raises(SeriesFileError, match="25 rows are earlier"):
        score_anomalies(source, out)
    source.write_text("timestamp,cpu,value\n1795586400,5,\n1795586460,6, \n")
    with pytest.raises(SeriesFileError, match="every value in column 'value' is empty"):
        score_anomalies(source, out)


def test_timestamp_formats() -> None:
    assert parse_timestamp("2026-11-25T06:00:00Z") == 1_795_586_400_000
    assert parse_timestamp("2026-11-25 06:00:00") == 1_795_586_400_000
    assert parse_timestamp("1795586400") == 1_795_586_400_000
    assert parse_timestamp("1795586400000") == 1_795_586_400_000
    assert parse_timestamp("1795586400000000") == 1_795_586_400_000  # µs
    assert parse_timestamp("1795586400000000000") == 1_795_586_400_000  # ns
    assert parse_timestamp("-31536000") == -31_536_000_000  # 1969


@pytest.mark.parametrize("stamp", ["-1e306", "1e300", "1e30"])
def test_a_timestamp_beyond_the_years_1_to_9999_is_one_clear_error(
    tmp_path: Path, stamp: str
) -> None:
    source, out = tmp_path / "in.csv", tmp_path / "out.csv"
    source.write_text(f"timestamp,value\n1767225600,1\n1767225660,2\n{stamp},3\n")
    for tool in (score_anomalies, lambda s, o: forecast_series(s, o, 3, 0.8)):
        with pytest.raises(SeriesFileError, match=f"row 4: .*{stamp}.* outside the years 1 to"):
            tool(source, out)
    assert not out.exists()


def _minutely(
    path: Path, rows: int, at: dict[int, str] | None = None, t0: int = 1767225600
) -> None:
    """``rows`` values around 10 a minute apart from ``t0`` (s); ``at`` replaces whole rows."""
    rng = random.Random(1)
    lines = [f"{t0 + 60 * i},{10 + rng.gauss(0, 0.2):.4f}" for i in range(rows)]
    for i, line in (at or {}).items():
        lines[i] = line
    path.write_text("timestamp,value\n" + "\n".join(lines) + "\n")


def _forecast_rows(path: Path, out: Path, notes: list[str] | None = None) -> list[dict[str, str]]:
    forecast_series(path, out, 3, 0.8, notes=notes)
    with out.open() as fh:
        return list(csv.DictReader(fh))


def test_a_first_spacing_unlike_the_rest_is_replaced_while_warming_up(tmp_path: Path) -> None:
    """A first row a second before minutely rows made every later row a 60-step gap: the
    forecaster never warmed up and the whole file got no forecast."""
    source = tmp_path / "in.csv"
    _minutely(source, 1000, t0=1767225601)
    text = source.read_text().replace("timestamp,value\n", "timestamp,value\n1767225600,10\n")
    source.write_text(text)
    rows = _forecast_rows(source, tmp_path / "out.csv")
    assert sum(bool(r["yhat_1"]) for r in rows) > 900
    assert abs(float(rows[-1]["yhat_1"]) - 10) < 0.5


def test_a_replaced_spacing_relearns_the_rows_kept(tmp_path: Path) -> None:
    """The rows before the spacing was replaced are learnt again at the new one: the file
    with an odd first row gets its first forecast on the same data row as the file without."""
    first_forecast = {}
    for name, head in (("plain", ""), ("odd", "1767225600,10\n")):
        source = tmp_path / f"{name}.csv"
        _minutely(source, 600, t0=1767225601)
        source.write_text(source.read_text().replace("value\n", "value\n" + head, 1))
        rows = _forecast_rows(source, tmp_path / f"{name}.out")
        first_forecast[name] = next(i for i, r in enumerate(rows) if r["yhat_1"])
    assert first_forecast["odd"] == first_forecast["plain"] + 1


def test_a_gappy_series_keeps_its_spacing(tmp_path: Path) -> None:
    """Every third minute missing: spacings of 60 s and 120 s. Their median (90 s) is a
    spacing no row has; re-spacing on it, over and over, left the file with no forecast."""
    source = tmp_path / "in.csv"
    rng = random.Random(2)
    rows = [
        f"{1767225600 + 60 * i},{10 + rng.gauss(0, 0.2):.4f}" for i in range(3000) if i % 3 != 2
    ]
    source.write_text("timestamp,value\n" + "\n".join(rows) + "\n")
    assert sum(bool(r["yhat_1"]) for r in _forecast_rows(source, tmp_path / "out.csv")) > 1800


def test_a_glitch_before_the_detector_warms_up_does_not_set_the_forecasts(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    for at in (5, 40):
        _minutely(source, 1500, at={at: f"{1767225600 + 60 * at},1e300"})
        rows = _forecast_rows(source, tmp_path / "out.csv")
        assert max(abs(float(r["yhat_1"]) - 10) for r in rows[200:]) < 1.0, at


def test_forecasts_before_1970_and_one_absurd_value(tmp_path: Path) -> None:
    """Rows before 1970 were taken for "no forecast yet"; a value of 1e300 was learnt as it
    is and the forecasts of every later row were near 1e82."""
    source = tmp_path / "in.csv"
    _minutely(source, 1500, t0=-31536000)
    rows = _forecast_rows(source, tmp_path / "out.csv")
    assert sum(bool(r["yhat_1"]) for r in rows) > 1400
    _minutely(source, 1500, at={150: f"{1767225600 + 60 * 150},1e300"})
    rows = _forecast_rows(source, tmp_path / "out.csv")
    later = [float(r["yhat_1"]) for r in rows[160:]]
    assert max(abs(y - 10) for y in later) < 1.0
    assert max(float(r["hi_1"]) - float(r["lo_1"]) for r in rows[160:]) < 2.0


def test_rows_older_than_a_row_learnt_are_counted_in_a_note(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    _minutely(source, 1000, at={500: "2962656000,10"})  # one row dated 2063
    notes: list[str] = []
    rows = _forecast_rows(source, tmp_path / "out.csv", notes)
    assert notes == [
        "499 rows were older than a row learnt before them (the first at line 503): they "
        "were not learnt, and their nearest forecasts are empty"
    ]
    assert len(rows) == 1000
    _minutely(source, 1000)
    notes.clear()
    _forecast_rows(source, tmp_path / "out.csv", notes)
    assert notes == []


def test_rows_that_all_share_one_timestamp_are_no_series(tmp_path: Path) -> None:
    source, out = tmp_path / "in.csv", tmp_path / "out.csv"
    source.write_text("timestamp,value\n" + "1767225600,5\n" * 50)
    for tool in (score_anomalies, lambda s, o: forecast_series(s, o, 3, 0.8)):
        with pytest.raises(SeriesFileError, match="all 50 rows have the same timestamp"):
            tool(source, out)
    source.write_text("timestamp,value\n1767225600,5\n")
    assert score_anomalies(source, out) == 1  # one row is not refused


def test_a_file_that_is_not_utf8_is_one_clear_error(tmp_path: Path) -> None:
    binary = tmp_path / "bin.csv"
    binary.write_bytes(b"\x00\xff\xfe garbage")
    with pytest.raises(SeriesFileError, match="not UTF-8 text"):
        score_anomalies(binary, tmp_path / "o.csv")
    late = tmp_path / "late.csv"  # the bad byte only after good rows
    late.write_bytes(b"timestamp,value\n2024-01-01 00:00:00,1\n2024-01-01 00:01:00,\xff\n")
    with pytest.raises(SeriesFileError, match=r"not UTF-8 text .* iconv -f cp1252"):
        forecast_series(late, tmp_path / "o.csv", 3, 0.8)
    utf16 = tmp_path / "utf16.csv"  # a spreadsheet's "Unicode text"
    utf16.write_bytes("timestamp\tvalue\n2024-01-01 00:00:00\t1\n".encode("utf-16"))
    with pytest.raises(SeriesFileError, match=r"UTF-16 text .* iconv -f utf-16"):
        score_anomalies(utf16, tmp_path / "o.csv")


@pytest.mark.parametrize("tool", ["score", "forecast"])
def test_a_failure_half_way_leaves_no_partial_output(tmp_path: Path, tool: str) -> None:
    source, target = tmp_path / "in.csv", tmp_path / "out.csv"
    write_series(source, 300)
    with source.open("a") as fh:
        fh.write("yesterday,1,h0\n")  # a bad row after 300 good ones
    target.write_text("an earlier result\n")

    def run() -> None:
        if tool == "score":
            score_anomalies(source, target)
        else:
            forecast_series(source, target, 3, 0.8)

    with pytest.raises(SeriesFileError, match="row 302"):
        run()
    assert target.read_text() == "an earlier result\n"  # untouched, not half rewritten
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv", "out.csv"]  # no leftovers
    target.unlink()
    with pytest.raises(SeriesFileError):
        run()
    assert not target.exists()


def test_output_may_be_the_input_and_gets_the_usual_mode(tmp_path: Path) -> None:
    source, copy = tmp_path / "in.csv", tmp_path / "copy.csv"
    write_series(source, 200)
    copy.write_bytes(source.read_bytes())
    expected = tmp_path / "expected.csv"
    score_anomalies(copy, expected)
    score_anomalies(source, source)  # in place, like sed -i: read whole, then replaced
    assert source.read_text() == expected.read_text()
    fresh = tmp_path / "fresh.csv"
    plain = tmp_path / "plain.csv"
    plain.write_text("")  # what open(..., "w") gives under this process's umask
    score_anomalies(copy, fresh)
    assert fresh.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777


def test_a_symlink_keeps_pointing_and_a_descriptor_is_written_as_it_comes(
    tmp_path: Path,
) -> None:
    source, real, link = tmp_path / "in.csv", tmp_path / "real.csv", tmp_path / "link.csv"
    write_series(source, 120)
    link.symlink_to(real)
    score_anomalies(source, link)
    assert link.is_symlink() and len(read(real)) == 121  # the file behind the link is written
    rd, wr = os.pipe()  # a shell's `-o /dev/stdout | next-step`
    try:
        score_anomalies(source, Path(f"/dev/fd/{wr}"))
        os.close(wr)
        with os.fdopen(rd) as fh:
            piped = list(csv.reader(fh))
    finally:
        with contextlib.suppress(OSError):
            os.close(wr)
    assert piped == read(real)
    log = tmp_path / "log.csv"  # `-o /dev/stdout >> log.csv`: appended, the file not replaced
    log.write_text("earlier\n")
    with log.open("a") as fh:
        score_anomalies(source, Path(f"/dev/fd/{fh.fileno()}"))
    assert log.read_text() == "earlier\n" + real.read_text()


def test_a_named_pipe_stays_a_pipe(tmp_path: Path) -> None:
    source, fifo = tmp_path / "in.csv", tmp_path / "scores.fifo"
    write_series(source, 120)
    os.mkfifo(fifo)
    got: list[str] = []

    def consume() -> None:
        with fifo.open() as fh:
            got.append(fh.read())

    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    score_anomalies(source, fifo)
    reader.join(timeout=30)
    assert stat.S_ISFIFO(fifo.stat().st_mode)  # not swapped for a regular file
    assert len(got) == 1 and len(got[0].splitlines()) == 121


def test_which_paths_are_a_shells_descriptor(tmp_path: Path) -> None:
    link = tmp_path / "out.csv"
    link.symlink_to("/dev/stdout")
    assert names_a_descriptor(Path("/dev/stdout"))
    assert names_a_descriptor(Path("/dev/fd/1"))
    assert names_a_descriptor(link)  # -o out.csv >> log, out.csv -> /dev/stdout
    assert names_a_descriptor(Path("/tmp/../dev/stdout"))
    assert not names_a_descriptor(Path("/dev/shm/scores.csv"))  # a file: replaced whole
    assert not names_a_descriptor(tmp_path / "scores.csv")


def test_output_keeps_open_w_permissions_and_reads_excel_csv(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    write_series(source, 120)
    excel = tmp_path / "excel.csv"  # a UTF-8 byte order mark, as Excel writes
    excel.write_bytes(b"\xef\xbb\xbf" + source.read_bytes())
    assert score_anomalies(excel, tmp_path / "from-excel.csv") == 120
    locked = tmp_path / "locked.csv"
    locked.write_text("keep\n")
    locked.chmod(0o444)
    if os.access(locked, os.W_OK):  # root may write anything: open(..., "w") would too
        score_anomalies(source, locked)
        assert len(read(locked)) == 121
    else:
        with pytest.raises(PermissionError):
            score_anomalies(source, locked)
        assert locked.read_text() == "keep\n"


@pytest.mark.parametrize("tool", ["score", "forecast"])
def test_a_stray_quote_spoils_its_own_row_only(tmp_path: Path, tool: str) -> None:
    source, target = tmp_path / "in.csv", tmp_path / "out.csv"
    write_series(source, 400)
    lines = source.read_text().splitlines()
    lines[200] = lines[200].replace(",", ',"', 1)  # its value's quote never closes
    lines[300] = lines[300].replace(",h", ',"h', 1) + '"'  # the next quote in the file
    source.write_text("\n".join(lines) + "\n")
    if tool == "score":
        rows = score_anomalies(source, target)
    else:
        rows = forecast_series(source, target, 3, 0.8)
    out = read(target)
    assert rows == 400 and len(out) == 401  # one output row per input row
    assert [r[0] for r in out[1:]] == [line.split(",")[0] for line in lines[1:]]
    assert out[200][1] == lines[200].split(',"')[1]  # kept as it reads: "32.4087,h1"
    assert out[200][2] == ""  # the row is padded: its outputs stay under their names
    if tool == "score":
        assert out[200][3:] == ["", ""]
    else:  # a missing value's forecasts: the last row's, for the rows after this one
        made = out[199][3:]  # yhat_1..3, lo_1..3, hi_1..3 at the last row learnt
        assert out[200][3:] == [*made[1:3], "", *made[4:6], "", *made[7:9], ""]
    assert all(v != "" for v in out[201][3:]) and all(v != "" for v in out[301][3:])


def test_a_broken_header_or_an_endless_line_is_one_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text('timestamp,"value\n2026-01-01 00:00:00,1\n')
    with pytest.raises(SeriesFileError, match="row 1: not CSV: a quoted field is not closed"):
        score_anomalies(bad, tmp_path / "o.csv")
    bad.write_text("timestamp,value\n2026-01-01 00:00:00," + "1" * (3 << 20) + "\n")
    with pytest.raises(SeriesFileError, match=r"row 2: not CSV: line is 3145748 characters"):
        forecast_series(bad, tmp_path / "o.csv", 3, 0.8)


@pytest.mark.parametrize("tool", ["score", "forecast"])
def test_nothing_is_learnt_from_a_row_whose_quote_does_not_close(tmp_path: Path, tool: str) -> None:
    rows = [f"{1_767_225_600 + i * 300},{50 + i % 5}" for i in range(400)]
    outputs = []
    for name, row in (("broken", '"9999'), ("missing", "")):  # the value column is the last
        source, target = tmp_path / f"{name}.csv", tmp_path / f"{name}_out.csv"
        rows[200] = f"{1_767_225_600 + 200 * 300},{row}"
        source.write_text("timestamp,value\n" + "\n".join(rows) + "\n")
        if tool == "score":
            score_anomalies(source, target)
        else:
            forecast_series(source, target, 3, 0.8)
        outputs.append([r[2:] for r in read(target)])
    assert outputs[0] == outputs[1]  # the broken row taught as much as a missing value


def test_a_quoted_note_may_span_lines_and_a_short_row_keeps_its_columns(tmp_path: Path) -> None:
    source, target = tmp_path / "in.csv", tmp_path / "out.csv"
    rows = [f"{1_767_225_600 + i * 300},{50 + i % 5},ok" for i in range(300)]
    rows[100] = f'{1_767_225_600 + 100 * 300},52,"first line\r\nsecond, line"'  # a spreadsheet's
    rows[150] = f"{1_767_225_600 + 150 * 300},50"  # no note
    source.write_text("timestamp,value,note\r\n" + "\r\n".join(rows) + "\r\n")
    assert score_anomalies(source, target) == 300
    out = read(target)
    assert len(out) == 301 and out[101][2] == "first line\nsecond, line"
    assert out[151][2] == "" and out[151][3] != "" and out[151][4] in ("0", "1")
