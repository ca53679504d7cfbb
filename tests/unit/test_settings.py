"""pso.yaml and PSO_* settings: the documented shape works, mistakes name the field."""

from pathlib import Path

import pytest

from app.settings import BUILTIN_SNAPSHOT_KEY, ConfigError, load_policy, load_settings

EXAMPLE = """
window: {size_s: 60, allowed_lateness_windows: 2}
resources:
  db-main: {capacity: 100}
subsystems:
  billing-api: {weight: 5, min: {db-main: 10}, deferrable: false}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pso.yaml"
    path.write_text(text)
    return path


def test_documented_example_loads(tmp_path: Path) -> None:
    policy = load_policy(write(tmp_path, EXAMPLE))
    assert policy.window.size_ms == 60_000 and policy.window.lateness_ms == 120_000
    assert policy.resources["db-main"].capacity == 100
    billing = policy.subsystems["billing-api"]
    assert billing.weight == 5 and billing.min == {"db-main": 10} and billing.deferrable is False


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("resources:\n  db-main: {capacity: -1}\n", "resources.db-main.capacity"),
        ("window: {size_s: 0}\n", "window.size_s"),
        ("subsystems:\n  a: {min: {gpu: 1}}\n", "subsystems.a.min.gpu: unknown resource"),
        ("subsystems:\n  a: {wieght: 1}\n", "subsystems.a.wieght"),
        ("- a\n- b\n", "top level must be a mapping"),
        ("window: {size_s: [\n", "not valid YAML"),
    ],
)
def test_errors_name_the_field(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_policy(write(tmp_path, text))
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_policy("/nonexistent/pso.yaml")


def test_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PSO_BROKER", "kafka-1:9092")
    monkeypatch.setenv("PSO_TOPICS__PREFIX", "acme")
    monkeypatch.setenv("PSO_WINDOW__SIZE_S", "30")
    monkeypatch.setenv("PSO_CONFIG", str(write(tmp_path, EXAMPLE)))
    s = load_settings()
    assert s.broker == "kafka-1:9092"
    assert s.topics.telemetry == "acme.telemetry" and s.topics.deadletter == "acme.deadletter"
    assert s.policy().window.size_s == 30  # environment overrides pso.yaml
    assert s.policy().resources["db-main"].capacity == 100


def test_bad_environment_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PSO_PROCESSING_GUARANTEE", "maybe")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "processing_guarantee" in str(info.value) and "\n" not in str(info.value)


def test_short_snapshot_key_is_refused_at_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PSO_SNAPSHOT_KEY", "hunter2")
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert "snapshot_key" in message and "at least 32" in message and "\n" not in message
    assert "hunter2" not in message  # a key is never echoed


def test_previous_snapshot_keys_verify_after_the_sealing_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    new, old1, old2 = "n" * 32, "o" * 40, "p" * 33
    monkeypatch.setenv("PSO_SNAPSHOT_KEY", new)
    monkeypatch.setenv("PSO_SNAPSHOT_KEYS_PREVIOUS", f"{old1}, {old2},")
    s = load_settings()
    assert s.snapshot_keys() == (new.encode(), old1.encode(), old2.encode())
    assert not s.uses_builtin_snapshot_key
    assert old1 not in repr(s) and old1 not in str(s.model_dump())  # secrets, never printed
    monkeypatch.setenv("PSO_SNAPSHOT_KEYS_PREVIOUS", f"{old1},short")
    with pytest.raises(ConfigError, match=r"snapshot_keys_previous: key #2 is 5 bytes"):
        load_settings()


def test_builtin_snapshot_key_is_flagged_wherever_it_is_listed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PSO_SNAPSHOT_KEY", raising=False)
    monkeypatch.delenv("PSO_SNAPSHOT_KEYS_PREVIOUS", raising=False)
    assert load_settings().uses_builtin_snapshot_key
    monkeypatch.setenv("PSO_SNAPSHOT_KEY", "n" * 32)
    assert not load_settings().uses_builtin_snapshot_key
    monkeypatch.setenv("PSO_SNAPSHOT_KEYS_PREVIOUS", BUILTIN_SNAPSHOT_KEY)
    assert load_settings().uses_builtin_snapshot_key  # it would still verify forged state
