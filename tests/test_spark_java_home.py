"""A wrong ``JAVA_HOME`` is named before Spark starts: ``spark-class`` runs ``$JAVA_HOME/bin/java``
whenever it is set, and the failure it gave ("Java gateway process exited") named neither Java nor
JAVA_HOME. Needs pyspark, not Java: no session is started."""

from __future__ import annotations

from types import ModuleType

import pytest

from conrec.data.config import SparkConfig
from conrec.errors import ConfigError


@pytest.fixture
def engine() -> ModuleType:
    pytest.importorskip("pyspark", reason="pip install pyspark==4.0.5 (the spark extra) for the Spark engine")
    from conrec.data.engine import spark

    return spark


def _fake_jdk(root):
    (root / "bin").mkdir(parents=True)
    java = root / "bin" / "java"
    java.write_text("#!/bin/sh\n")
    java.chmod(0o755)
    return root


def test_a_java_home_without_bin_java_is_refused_in_one_line_before_a_session_starts(engine, tmp_path, monkeypatch):
    monkeypatch.setattr(engine, "_launches_jvm", lambda: True)
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "nojdk"))
    with pytest.raises(ConfigError) as err:
        engine.spark_session(SparkConfig())
    msg = str(err.value)
    assert "\n" not in msg and f"JAVA_HOME={tmp_path / 'nojdk'} has no bin/java" in msg
    assert "the JDK's root (e.g. /usr/lib/jvm/java-17-openjdk-amd64, not its bin/)" in msg


def test_a_java_home_pointing_at_the_jdks_bin_names_its_root(engine, tmp_path):
    """The common mistake, JAVA_HOME=<jdk>/bin, is told the directory to use; a JDK root or no JAVA_HOME
    (spark-class then runs the java on PATH) passes."""
    jdk = _fake_jdk(tmp_path / "jdk")
    assert engine.java_home_problem(str(jdk)) is None
    assert engine.java_home_problem(None) is None and engine.java_home_problem("") is None  # the java on PATH
    assert f"set it to {jdk}, the JDK's root" in engine.java_home_problem(str(jdk / "bin"))
    (jdk / "bin" / "java").chmod(0o644)  # not executable
    assert "has no bin/java" in engine.java_home_problem(str(jdk))


def test_a_jvm_that_cannot_start_is_quoted_with_its_reason(engine, tmp_path):
    """The first line alone ("Error occurred during initialization of VM") said that the JVM failed, not why."""
    log = tmp_path / "spark.log"
    log.write_text("WARNING: Using incubator modules\nError occurred during initialization of VM\n"
                   "Could not reserve enough space for 68719476736KB object heap\nmore\n")
    head = engine._log_head(log)
    assert "Error occurred during initialization of VM / Could not reserve enough space" in head and "more" not in head


def test_a_jvm_that_died_mid_job_is_named_by_its_logs_last_error(engine, tmp_path, monkeypatch):
    """Py4J says only "Answer from Java side is empty" when the JVM dies; its log says why."""
    from py4j.protocol import Py4JError

    log = tmp_path / "spark.log"
    log.write_text("INFO starting\nERROR Executor: Exception in task 0.0\njava.lang.OutOfMemoryError: Java heap space\nINFO bye\n")
    monkeypatch.setattr(engine, "_jvm_log", log)
    msg = str(engine.spark_failure(Py4JError("Answer from Java side is empty")))
    assert "\n" not in msg
    assert msg == (f"data.engine: spark failed: Answer from Java side is empty; the log's last error: "
                   f"java.lang.OutOfMemoryError: Java heap space (Spark's log: {log})")
    # a Python-side pyspark error is not the JVM's: the log is not searched for it
    from pyspark.errors import PySparkValueError

    assert "the log's last error" not in str(engine.spark_failure(PySparkValueError("bad value")))
