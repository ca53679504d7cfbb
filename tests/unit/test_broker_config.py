"""Unit tests for app/dev/broker: config rendering, ports, jar cache, process control, settings.

No JVM and no network: Maven and java are replaced by tiny Python scripts that behave like
them (copy "jars", print the broker's ready line and listen on the configured port).

Long (about 770 lines) because it shares those fakes across every part of the broker's
life, which a split would have to import back from a conftest of their own.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.dev import broker as B
from app.dev.broker import (
    BrokerError,
    EmbeddedKafka,
    ExternalBroker,
    KafkaDistribution,
    choose_kind,
    config,
    embedded,
    jars,
    new_cluster_id,
    normalize_bootstrap,
    parse_java_version,
    pick_free_port,
    pidfile,
    port_accepts,
    port_is_free,
    render_log4j2,
    render_server_properties,
    resolve_broker,
    stop_pidfile,
    tail_lines,
)
from app.settings import Settings, load_settings


def parse_props(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            assert key not in out, f"duplicate key {key}"
            out[key] = value
    return out


def write_script(path: Path, body: str) -> Path:
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def pid_alive(pid: int) -> bool:
    """True when pid exists and is not a zombie."""
    return pidfile._proc_cmdline(pid) is not None


# --------------------------------------------------------------------------- rendering


def test_server_properties_are_a_single_node_kraft_broker(tmp_path: Path) -> None:
    props = parse_props(render_server_properties(19092, 19093, tmp_path / "kraft"))
    assert props["process.roles"] == "broker,controller"
    assert props["node.id"] == "1"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092"
    assert props["controller.listener.names"] == "CONTROLLER"
    assert props["log.dirs"] == str(tmp_path / "kraft")
    assert props["auto.create.topics.enable"] == "false"
    for key in (
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "transaction.state.log.min.isr",
        "share.coordinator.state.topic.replication.factor",
        "share.coordinator.state.topic.min.isr",
    ):
        assert props[key] == "1"
    assert props["group.initial.rebalance.delay.ms"] == "0"


def test_extra_properties_replace_in_place_and_append_new(tmp_path: Path) -> None:
    extra = {"num.partitions": "3", "log.segment.bytes": "60000"}
    text = render_server_properties(1, 2, tmp_path, extra)
    props = parse_props(text)  # asserts every key appears once
    assert props["num.partitions"] == "3"
    assert props["log.segment.bytes"] == "60000"
    assert list(props)[-1] == "log.segment.bytes"


def test_no_time_retention_by_default(tmp_path: Path) -> None:
    # Records carry event time: replayed data from last month must not expire on arrival.
    props = parse_props(render_server_properties(1, 2, tmp_path))
    assert props["log.retention.ms"] == "-1"
    assert int(props["log.retention.bytes"]) >= 1 << 30


def test_rendering_is_deterministic(tmp_path: Path) -> None:
    a = render_server_properties(5, 6, tmp_path, {"b": "1", "a": "2"})
    b = render_server_properties(5, 6, tmp_path, {"b": "1", "a": "2"})
    assert a == b


def test_same_client_and_controller_port_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(BrokerError, match="must differ"):
        render_server_properties(9092, 9092, tmp_path)


def test_log4j2_config_logs_to_stdout_at_the_given_level() -> None:
    text = render_log4j2("WARN")
    assert "appender.out.type = Console" in text
    assert "appender.out.target = SYSTEM_OUT" in text
    assert "rootLogger.level = WARN" in text
    assert "rootLogger.level = INFO" in render_log4j2()


@given(st.integers(min_value=0, max_value=50))
def test_cluster_ids_look_like_kafka_uuids(_: int) -> None:
    cid = new_cluster_id()
    assert len(cid) == 22
    assert not cid.startswith("-")
    assert len(base64.urlsafe_b64decode(cid + "==")) == 16


def test_cluster_ids_differ() -> None:
    assert len({new_cluster_id() for _ in range(100)}) == 100


@pytest.mark.parametrize(
    ("text", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15', 17),
        ('java version "1.8.0_292"', 8),
        ('openjdk version "21" 2023-09-19', 21),
        ('openjdk version "25.0.1" 2025-10-21 LTS', 25),
    ],
)
def test_parse_java_version(text: str, major: int) -> None:
    assert parse_java_version(text) == major


def test_parse_java_version_rejects_garbage() -> None:
    with pytest.raises(BrokerError, match="Java version"):
        parse_java_version("command not found")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("localhost:9092", "localhost:9092"),
        (" PLAINTEXT://127.0.0.1:9092 ", "127.0.0.1:9092"),
        ("kafka://a:1,b:2", "a:1,b:2"),
        ("[::1]:9092", "[::1]:9092"),
    ],
)
def test_normalize_bootstrap(raw: str, expected: str) -> None:
    assert normalize_bootstrap(raw) == expected


@pytest.mark.parametrize("raw", ["localhost", "host:port", ":9092", "h:0", "h:70000", "a:1,"])
def test_normalize_bootstrap_rejects(raw: str) -> None:
    with pytest.raises(BrokerError, match="not host:port"):
        normalize_bootstrap(raw)


@pytest.mark.parametrize(
    ("requested", "java", "kind"),
    [
        (None, True, "kafka"),
        (None, False, "tansu"),
        ("auto", False, "tansu"),
        ("TANSU", True, "tansu"),
        ("kafka", True, "kafka"),
    ],
)
def test_choose_kind(requested: str | None, java: bool, kind: str) -> None:
    assert choose_kind(requested, java_found=java) == kind


def test_choose_kind_refuses_kafka_without_java_in_one_line() -> None:
    with pytest.raises(BrokerError) as err:
        choose_kind("kafka", java_found=False)
    assert "java not found" in str(err.value)
    assert "\n" not in str(err.value)
    with pytest.raises(BrokerError, match="expected kafka, tansu or auto"):
        choose_kind("docker", java_found=True)


# --------------------------------------------------------------------------- resolve_broker


def test_resolve_broker_uses_the_settings_broker() -> None:
    chosen = resolve_broker(Settings(broker="settings-host:2"))
    assert isinstance(chosen, ExternalBroker)
    assert chosen.bootstrap == "settings-host:2"
    with chosen as same:  # start/stop are no-ops
        assert same is chosen
        assert same.kind == "external"
        assert same.pid is None


def test_resolve_broker_reads_pso_broker_through_the_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PSO_BROKER", "PLAINTEXT://env-host:9093")
    chosen = resolve_broker(load_settings())
    assert isinstance(chosen, ExternalBroker)
    assert chosen.bootstrap == "env-host:9093"


@pytest.mark.parametrize("value", [None, "", "embedded", "AUTO"])
def test_resolve_broker_embedded_is_returned_unstarted(value: str | None, tmp_path: Path) -> None:
    settings = Settings(broker=value, embedded="tansu", cache_dir=tmp_path, JAVA_HOME=tmp_path)
    chosen = resolve_broker(settings)
    assert isinstance(chosen, EmbeddedKafka)
    assert chosen.pid is None
    assert not chosen.is_running()
    with pytest.raises(BrokerError, match="not started"):
        _ = chosen.bootstrap
    # ... and it is the embedded broker the settings describe
    assert chosen.kind == "tansu"
    assert chosen.java_home == tmp_path
    assert chosen.distribution is not None and chosen.distribution.cache_dir == tmp_path


def test_resolve_broker_rejects_bad_address() -> None:
    with pytest.raises(BrokerError, match="not host:port"):
        resolve_broker(Settings(broker="no-port-here"))


# --------------------------------------------------------------------------- ports


def test_pick_free_port_is_bindable_and_respects_exclude() -> None:
    port = pick_free_port()
    assert 0 < port < 65536
    assert port_is_free(port)
    other = pick_free_port(exclude={port})
    assert other != port


def test_port_probes_see_a_listener() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        port = int(srv.getsockname()[1])
        assert not port_is_free(port)
        assert port_accepts(port)
    assert not port_accepts(port)


# --------------------------------------------------------------------------- jar cache

FAKE_MVN = """
import os, sys
from pathlib import Path
counter = Path({counter!r})
counter.write_text(str(int(counter.read_text() or "0") + 1) if counter.exists() else "1")
args = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("-D") and "=" in a)
if {fail!r}:
    print("[ERROR] Failed to execute goal: Could not resolve dependencies (simulated)")
    print("[ERROR] -> [Help 1]")
    sys.exit(1)
out = Path(args["outputDirectory"])
version = args["kafka.version"]
for name, size in [(f"kafka_2.13-{{version}}.jar", 100), ("kafka-clients.jar", 50)]:
    (out / name).write_bytes(b"x" * size)
"""


def fake_mvn(tmp_path: Path, fail: bool = False) -> tuple[str, Path]:
    counter = tmp_path / "mvn-calls"
    name = "mvn-fail" if fail else "mvn-ok"
    script = write_script(tmp_path / name, FAKE_MVN.format(counter=str(counter), fail=fail))
    return str(script), counter


def calls(counter: Path) -> int:
    return int(counter.read_text()) if counter.exists() else 0


@pytest.fixture
def pom(tmp_path: Path) -> Path:
    path = tmp_path / "pom.xml"
    path.write_text("<project/>\n")
    return path


def test_cache_root_is_the_given_dir_or_the_settings_default(tmp_path: Path) -> None:
    assert B.cache_root(tmp_path) == tmp_path
    assert B.cache_root(Path("~/pso-cache")) == Path.home() / "pso-cache"
    assert B.cache_root() == Path.home() / ".cache" / "pso"
    assert B.cache_root() == B.cache_root(Settings.model_fields["cache_dir"].default)
    assert (
        KafkaDistribution(cache_dir=tmp_path).libs == tmp_path / f"kafka-{B.KAFKA_VERSION}" / "libs"
    )


def test_pso_cache_dir_reaches_the_jars_through_the_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PSO_CACHE_DIR", str(tmp_path))
    broker = EmbeddedKafka.from_settings(load_settings())
    assert broker.distribution is not None
    assert broker.distribution.libs == tmp_path / f"kafka-{B.KAFKA_VERSION}" / "libs"


def test_default_pom_is_the_deploy_one() -> None:
    assert jars.DEFAULT_POM.is_file()
    assert "kafka_2.13" in jars.DEFAULT_POM.read_text()


def test_fetch_writes_marker_and_runs_maven_once(tmp_path: Path, pom: Path) -> None:
    mvn, counter = fake_mvn(tmp_path)
    dist = KafkaDistribution("9.9.9", cache_dir=tmp_path / "cache", pom=pom, mvn=mvn)
    assert not dist.is_complete()
    libs = dist.ensure()
    assert libs == tmp_path / "cache" / "kafka-9.9.9" / "libs"
    assert dist.is_complete()
    marker = json.loads((libs / jars.MARKER_FILE).read_text())
    assert marker["jars"] == {"kafka-clients.jar": 50, "kafka_2.13-9.9.9.jar": 100}
    assert marker["kafka_version"] == "9.9.9"
    assert stat.S_IMODE(libs.stat().st_mode) == 0o755
    assert dist.classpath == f"{libs}/*"
    dist.ensure()
    assert calls(counter) == 1
    assert not list(dist.home.glob(".libs-*"))


def test_truncated_jar_or_changed_pom_triggers_refetch(tmp_path: Path, pom: Path) -> None:
    mvn, counter = fake_mvn(tmp_path)
    dist = KafkaDistribution("9.9.9", cache_dir=tmp_path, pom=pom, mvn=mvn)
    dist.ensure()
    (dist.libs / "kafka-clients.jar").write_bytes(b"x")  # truncated by a crash
    assert not dist.is_complete()
    dist.ensure()
    assert calls(counter) == 2
    assert dist.is_complete()
    pom.write_text("<project><!-- new log4j --></project>\n")
    assert not dist.is_complete()
    dist.ensure()
    assert calls(counter) == 3


def test_half_folder_without_marker_is_replaced(tmp_path: Path, pom: Path) -> None:
    mvn, counter = fake_mvn(tmp_path)
    dist = KafkaDistribution("9.9.9", cache_dir=tmp_path, pom=pom, mvn=mvn)
    dist.libs.mkdir(parents=True)
    (dist.libs / "kafka_2.13-9.9.9.jar").write_bytes(b"half")
    (dist.home / ".libs-interrupted").mkdir()
    assert not dist.is_complete()
    dist.ensure()
    assert dist.is_complete()
    assert calls(counter) == 1
    assert (dist.libs / "kafka_2.13-9.9.9.jar").stat().st_size == 100
    assert sorted(p.name for p in dist.home.iterdir()) == [".fetch.lock", "libs"]


def test_failed_maven_leaves_nothing_that_looks_complete(tmp_path: Path, pom: Path) -> None:
    mvn, _ = fake_mvn(tmp_path, fail=True)
    dist = KafkaDistribution("9.9.9", cache_dir=tmp_path, pom=pom, mvn=mvn)
    with pytest.raises(BrokerError) as err:
        dist.ensure()
    message = str(err.value)
    assert "\n" not in message
    assert "Maven failed" in message
    assert "Could not resolve dependencies" in message
    assert not dist.libs.exists()
    assert not list(dist.home.glob(".libs-*"))


def test_missing_maven_is_one_readable_line(tmp_path: Path, pom: Path) -> None:
    dist = KafkaDistribution("9.9.9", cache_dir=tmp_path, pom=pom, mvn="no-such-mvn-xyz")
    with pytest.raises(BrokerError) as err:
        dist.ensure()
    assert "'no-such-mvn-xyz' (Maven) not found" in str(err.value)
    assert "\n" not in str(err.value)


def test_tail_lines(tmp_path: Path) -> None:
    path = tmp_path / "log"
    path.write_text("".join(f"line {i}\n" for i in range(100)))
    assert tail_lines(path, 3) == ["line 97", "line 98", "line 99"]
    assert tail_lines(tmp_path / "missing") == []


# --------------------------------------------------------------------------- process control

FAKE_JAVA = """
import os, re, socket, sys, time
args = sys.argv[1:]
if args == ["-version"]:
    print('openjdk version "{version}" 2025-01-01', file=sys.stderr)
    sys.exit(0)
if "kafka.tools.StorageTool" in args:
    print("Formatting (simulated)")
    sys.exit(0)
mode = {mode!r}
if mode == "crash":
    print("Exception in thread main: simulated broker crash", flush=True)
    sys.exit(3)
if mode == "hang":
    open("hang.pid", "w").write(str(os.getpid()))
    time.sleep(120)
props = open(args[-1]).read()
port = int(re.search(r"^listeners=PLAINTEXT://127.0.0.1:(\\d+)", props, re.M).group(1))
srv = socket.socket()
srv.bind(("127.0.0.1", port))
srv.listen()
if mode == "ready":
    print("[t] INFO [KafkaRaftServer nodeId=1] Kafka Server started (kafka.server)", flush=True)
while True:
    conn, _ = srv.accept()
    conn.close()
"""


@pytest.fixture
def fake_dist(tmp_path: Path, pom: Path) -> KafkaDistribution:
    mvn, _ = fake_mvn(tmp_path)
    dist = KafkaDistribution(B.KAFKA_VERSION, cache_dir=tmp_path / "cache", pom=pom, mvn=mvn)
    dist.ensure()
    return dist


def fake_java(tmp_path: Path, mode: str, version: str = "17.0.9") -> str:
    path = tmp_path / f"java-{mode}-{version}"
    return str(write_script(path, FAKE_JAVA.format(mode=mode, version=version)))


@pytest.fixture
def broker_factory(tmp_path: Path, fake_dist: KafkaDistribution) -> Iterator[list[EmbeddedKafka]]:
    made: list[EmbeddedKafka] = []
    yield made
    for broker in made:
        broker.stop()


def make(
    made: list[EmbeddedKafka], tmp_path: Path, dist: KafkaDistribution, mode: str, **kw: object
) -> EmbeddedKafka:
    broker = EmbeddedKafka(
        kind="kafka",
        java=fake_java(tmp_path, mode, str(kw.pop("version", "17.0.9"))),
        distribution=dist,
        **kw,  # type: ignore[arg-type]
    )
    made.append(broker)
    return broker


def test_start_waits_for_port_and_log_then_stop_kills_the_group(
    tmp_path: Path, fake_dist: KafkaDistribution, broker_factory: list[EmbeddedKafka]
) -> None:
    broker = make(broker_factory, tmp_path, fake_dist, "ready", startup_timeout_s=30)
    with broker:
        pid = broker.pid
        assert pid is not None
        assert broker.kind == "kafka"
        assert broker.supports_transactions
        assert broker.bootstrap.startswith("127.0.0.1:")
        port = int(broker.bootstrap.rsplit(":", 1)[1])
        assert port_accepts(port)
        assert os.getpgid(pid) == pid  # own process group
        data = broker.data_dir
        assert data is not None
        info = json.loads((data / pidfile.PID_FILE).read_text())
        assert info["pid"] == pid
        assert info["bootstrap"] == broker.bootstrap
        props = parse_props((data / config.SERVER_PROPERTIES).read_text())
        assert props["controller.quorum.voters"] == f"1@127.0.0.1:{broker.controller_port}"
        assert "Kafka Server started" in broker.log_path.read_text()
        assert broker.ready_seconds is not None
    assert broker.pid is None
    assert not pid_alive(pid)
    assert not data.exists()  # temp data dir removed


def test_given_port_and_data_dir_are_used_and_kept(
    tmp_path: Path, fake_dist: KafkaDistribution, broker_factory: list[EmbeddedKafka]
) -> None:
    port = pick_free_port()
    data = tmp_path / "data"
    broker = make(broker_factory, tmp_path, fake_dist, "ready", port=port, data_dir=data)
    broker.start()
    assert broker.bootstrap == f"127.0.0.1:{port}"
    with pytest.raises(BrokerError, match="already running"):
        broker.start()
    second = make(broker_factory, tmp_path, fake_dist, "ready", data_dir=data)
    with pytest.raises(BrokerError, match="still running"):
        second.start()
    broker.stop()
    broker.stop()  # idempotent
    assert (data / embedded.LOG_FILE).exists()
    assert not (data / pidfile.PID_FILE).exists()


def test_busy_port_is_reported_before_spawning(
    tmp_path: Path, fake_dist: KafkaDistribution, broker_factory: list[EmbeddedKafka]
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        port = int(srv.getsockname()[1])
        broker = make(broker_factory, tmp_path, fake_dist, "ready", port=port)
        with pytest.raises(BrokerError, match="already in use"):
            broker.start()
    assert broker.pid is None


def test_crash_during_start_raises_with_log_tail(
    tmp_path: Path, fake_dist: KafkaDistribution, broker_factory: list[EmbeddedKafka]
) -> None:
    data = tmp_path / "crash"
    broker = make(broker_factory, tmp_path, fake_dist, "crash", data_dir=data)
    with pytest.raises(BrokerError) as err:
        broker.start()
    first, *rest = str(err.value).splitlines()
    assert "exited with code 3" in first
    assert any("simulated broker crash" in line for line in rest)
    assert broker.pid is None
    assert not (data / pidfile.PID_FILE).exists()


def test_not_ready_in_time_is_killed(
    tmp_path: Path, fake_dist: KafkaDistribution, broker_factory: list[EmbeddedKafka]
) -> None:
    data = tmp_path / "hang"
    broker = make(broker_factory, tmp_path, fake_dist, "hang", data_dir=data, startup_timeout_s=1)
    with pytest.raises(BrokerError, match="not ready") as err:
        broker.start()
    hung_pid = int((data / "hang.pid").read_text())
    assert not pid_alive(hung_pid)
    assert "not ready on 127.0.0.1:" in str(err.value)
    assert broker.pid is None
    assert not (data / pidfile.PID_FILE).exists()


def test_ready_line_of_an_earlier_run_does_not_count(
    tmp_path: Path, fake_dist: KafkaDistribution, broker_factory: list[EmbeddedKafka]
) -> None:
    data = tmp_path / "reused"
    data.mkdir()
    (data / embedded.LOG_FILE).write_text(
        "[old] INFO [KafkaRaftServer nodeId=1] Kafka Server started\n"
    )
    broker = make(broker_factory, tmp_path, fake_dist, "silent", data_dir=data, startup_timeout_s=1)
    with pytest.raises(BrokerError, match="not ready"):
        broker.start()  # listening, but this run never logged its ready line
    assert broker.pid is None


def test_big_log_of_a_reused_data_dir_is_rotated(
    tmp_path: Path,
    fake_dist: KafkaDistribution,
    broker_factory: list[EmbeddedKafka],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(embedded, "_LOG_ROTATE_BYTES", 10)
    data = tmp_path / "rotate"
    data.mkdir()
    (data / embedded.LOG_FILE).write_text("old run line that is long enough\n")
    with make(broker_factory, tmp_path, fake_dist, "ready", data_dir=data):
        assert "old run" not in (data / embedded.LOG_FILE).read_text()
    assert (data / (embedded.LOG_FILE + ".1")).read_text() == "old run line that is long enough\n"


def test_old_java_is_refused_in_one_line(
    tmp_path: Path, fake_dist: KafkaDistribution, broker_factory: list[EmbeddedKafka]
) -> None:
    broker = make(broker_factory, tmp_path, fake_dist, "ready", version="1.8.0_292")
    with pytest.raises(BrokerError) as err:
        broker.start()
    assert "needs Java 17+" in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_java_for_kafka_is_one_line(tmp_path: Path) -> None:
    broker = EmbeddedKafka(kind="kafka", java=str(tmp_path / "no-java"), data_dir=tmp_path)
    with pytest.raises(BrokerError) as err:
        broker.start()
    assert "java not found" in str(err.value)
    assert "\n" not in str(err.value)


def test_stop_pidfile_stops_a_broker_from_outside(
    tmp_path: Path, fake_dist: KafkaDistribution, broker_factory: list[EmbeddedKafka]
) -> None:
    data = tmp_path / "ext"
    broker = make(broker_factory, tmp_path, fake_dist, "ready", data_dir=data)
    broker.start()
    pid = broker.pid
    assert pid is not None
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            f"from app.dev.broker import stop_pidfile; import pathlib; "
            f"print(stop_pidfile(pathlib.Path({str(data)!r})))",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.stdout.strip() == "True"
    assert not pid_alive(pid)
    assert not (data / pidfile.PID_FILE).exists()
    assert not stop_pidfile(data)  # nothing left to stop
    broker.stop()  # reaps the child; still fine


def test_stop_pidfile_never_kills_a_recycled_pid(tmp_path: Path) -> None:
    sleeper = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        info = {"pid": sleeper.pid, "kind": "kafka", "token": "/not/our/server.properties"}
        (tmp_path / pidfile.PID_FILE).write_text(json.dumps(info))
        assert not stop_pidfile(tmp_path)
        assert sleeper.poll() is None  # untouched
        assert not (tmp_path / pidfile.PID_FILE).exists()  # stale file cleaned up
        info["token"] = "sleep"
        (tmp_path / pidfile.PID_FILE).write_text(json.dumps(info))
        assert stop_pidfile(tmp_path, timeout_s=5)
        assert sleeper.wait(timeout=5) == -signal.SIGTERM
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
            sleeper.wait()


def test_pidfile_check_waits_out_the_empty_cmdline_of_a_process_mid_exec(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/proc shows an empty command line between exec closing fds and the kernel filling it."""
    reads = iter(["", "", "sleep 30"])
    monkeypatch.setattr(pidfile, "_proc_cmdline", lambda pid: next(reads))
    (tmp_path / pidfile.PID_FILE).write_text(json.dumps({"pid": 4242, "token": "sleep"}))
    assert pidfile.live_broker_pid(tmp_path) == 4242


def test_pidfile_check_never_waits_on_a_gone_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[int] = []

    def gone(pid: int) -> None:
        reads.append(pid)

    monkeypatch.setattr(pidfile, "_proc_cmdline", gone)
    (tmp_path / pidfile.PID_FILE).write_text(json.dumps({"pid": 4242, "token": "sleep"}))
    assert pidfile.live_broker_pid(tmp_path) is None
    assert reads == [4242]


def test_cmdline_of_a_just_spawned_process_is_never_read_as_empty() -> None:
    """The CI failure: read straight after ``Popen``, /proc sometimes still shows ''.

    A real-process check of the wait; the race itself is timing-bound. Unfixed, this test
    failed in 1 of 3 runs with both cores busy and in none of 3 on an idle machine; the
    monkeypatched test above pins the logic deterministically.
    """
    for _ in range(200):
        child = subprocess.Popen(["sleep", "30"], start_new_session=True)
        try:
            cmdline = pidfile._settled_cmdline(child.pid)
        finally:
            child.kill()
            child.wait()
        assert cmdline is not None and "sleep" in cmdline


def test_stop_pidfile_without_file_is_false(tmp_path: Path) -> None:
    assert not stop_pidfile(tmp_path)
    (tmp_path / pidfile.PID_FILE).write_text("not json")
    assert not stop_pidfile(tmp_path)


def test_wait_gone_sees_a_reaped_process() -> None:
    proc = subprocess.Popen(["true"])
    proc.wait()
    assert pidfile._wait_gone(proc.pid, 1.0)


# --------------------------------------------------------------------------- settings


def test_broker_settings_come_from_their_environment_variables(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PSO_EMBEDDED", " Tansu")
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "jdk"))
    monkeypatch.setenv("CALF_TANSU_BIN", str(tmp_path / "tansu"))
    settings = load_settings()
    assert settings.embedded == "tansu"
    assert settings.java_home == tmp_path / "jdk"
    assert settings.tansu_bin == tmp_path / "tansu"
    broker = EmbeddedKafka.from_settings(settings, heap_mb=256)
    assert (broker.kind, broker.java_home, broker.tansu_bin) == (
        "tansu",
        tmp_path / "jdk",
        tmp_path / "tansu",
    )
    assert broker.heap_mb == 256
    assert EmbeddedKafka.from_settings(settings, kind="kafka").kind == "kafka"


def test_empty_java_home_and_tansu_bin_are_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JAVA_HOME", "")
    monkeypatch.setenv("CALF_TANSU_BIN", " ")
    monkeypatch.delenv("PSO_EMBEDDED", raising=False)
    settings = load_settings()
    assert (settings.embedded, settings.java_home, settings.tansu_bin) == ("auto", None, None)


def test_unknown_embedded_kind_is_a_settings_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from app.settings import ConfigError

    monkeypatch.setenv("PSO_EMBEDDED", "docker")
    with pytest.raises(ConfigError, match="embedded: Input should be 'auto', 'kafka' or 'tansu'"):
        load_settings()


def test_java_home_wins_over_path(tmp_path: Path) -> None:
    home = tmp_path / "jdk"
    (home / "bin").mkdir(parents=True)
    java = write_script(home / "bin" / "java", "print('fake')\n")
    assert B.find_java(java_home=home) == str(java)
    assert B.find_java(java_home=tmp_path / "no-jdk") != str(java)  # falls back to PATH
    assert B.find_java("no-such-java-xyz", java_home=home) is None  # explicit wins


def test_broker_starts_the_java_of_its_java_home(
    tmp_path: Path, fake_dist: KafkaDistribution, broker_factory: list[EmbeddedKafka]
) -> None:
    home = tmp_path / "jdk"
    (home / "bin").mkdir(parents=True)
    write_script(home / "bin" / "java", FAKE_JAVA.format(mode="ready", version="17.0.9"))
    broker = EmbeddedKafka(kind="kafka", java_home=home, distribution=fake_dist)
    broker_factory.append(broker)
    with broker:
        assert broker.kind == "kafka"
        assert f"{home}/bin/java" in broker.log_path.read_text().splitlines()[0]


def test_tansu_bin_is_used_verbatim_or_refused(tmp_path: Path) -> None:
    tansu = write_script(tmp_path / "tansu", "print('fake')\n")
    assert B.find_tansu(tansu) == str(tansu)
    plain = tmp_path / "not-executable"
    plain.write_text("")
    for bad in (plain, tmp_path / "missing"):
        with pytest.raises(BrokerError, match=r"CALF_TANSU_BIN=.* does not point at an executable"):
            B.find_tansu(bad)
