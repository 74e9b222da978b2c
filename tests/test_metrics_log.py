"""MetricsLog: append, read back, survive a torn line, drop steps after a resume point."""

from sg_keras.job.metrics_log import MetricsLog


def test_append_and_series(tmp_path):
    log = MetricsLog(tmp_path / "m.jsonl", resume_step=0)
    log.append({"step": 10, "split": "train", "loss": 1.0, "sg_loss/a": 0.5})
    log.append({"step": 10, "split": "eval", "loss": 2.0})
    log.append({"step": 20, "split": "train", "loss": 0.5, "cosine/a": 0.3})
    assert log.series("loss") == ([10, 20], [1.0, 0.5])
    assert log.series("loss", "eval") == ([10], [2.0])
    assert log.keys("cosine/") == ["cosine/a"]
    again = MetricsLog(tmp_path / "m.jsonl", resume_step=100)
    assert again.records == log.records


def test_resume_drops_later_steps_and_torn_lines(tmp_path):
    path = tmp_path / "m.jsonl"
    log = MetricsLog(path, resume_step=0)
    for step in (10, 20, 30):
        log.append({"step": step, "split": "train", "loss": 1.0 / step})
    with open(path, "a") as handle:
        handle.write('{"step": 40, "split": "tr')          # killed mid-write
    resumed = MetricsLog(path, resume_step=20)
    assert [r["step"] for r in resumed.records] == [10, 20]
    assert [r["step"] for r in MetricsLog(path, resume_step=1000).records] == [10, 20]
