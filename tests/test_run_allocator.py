"""`cab run`'s host allocator policy (config `cpu_allocator`) and the record's `allocator` field."""

from __future__ import annotations

import platform

import pytest

from cab.results.records import ALLOCATORS, run_id_of, validate
from cab.run.runner import run_job

GLIBC = platform.libc_ver()[0] == "glibc"
CELL = ("attention=linear", "task=mqar", "pattern=causal_self", "trainer.steps=3", "threads=1")


@pytest.mark.parametrize("policy,expected", [("held", "glibc_held"), ("default", "glibc_default")])
def test_the_record_says_which_allocator_policy_ran(smoke_config, policy, expected):
    record = run_job(smoke_config(*CELL, f"cpu_allocator={policy}", "device=cpu"))
    assert record["status"] == "ok", record["error"]
    assert record["allocator"] == (expected if GLIBC else "system") and validate(record) == []


def test_the_policy_does_not_change_the_cell(smoke_config):
    held, default = (smoke_config(*CELL, f"cpu_allocator={p}") for p in ("held", "default"))
    assert run_id_of(held) == run_id_of(default)  # how fast, not what: the same record name


def test_the_default_policy_is_the_config_default(smoke_config):
    from conftest import compose

    assert compose(["trainer=smoke"])["cpu_allocator"] in ("held", "default")


def test_an_unknown_policy_fails_the_job_in_one_line(smoke_config):
    record = run_job(smoke_config(*CELL, "cpu_allocator=jemalloc"))
    assert record["status"] == "failed" and record["allocator"] is None
    assert "cpu_allocator" in record["error"]["message"] and "\n" not in record["error"]["message"]


def test_validation_accepts_records_without_the_field_and_rejects_unknown_values(smoke_config):
    record = run_job(smoke_config(*CELL))
    assert record["allocator"] in ALLOCATORS
    older = {k: v for k, v in record.items() if k != "allocator"}
    assert validate(older) == []
    assert any("allocator" in p for p in validate({**record, "allocator": "tcmalloc"}))
