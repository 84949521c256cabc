"""On a failed lab test, both daemons' decisions over its span go to the test's output: on a
machine whose logs are gone once the run ends (CI), that is what says what the cluster did.
Then the lab is repaired (``Lab.repair``), so that the tests after it sharing it start from a
redundant cluster rather than fail one after another on what the failure left behind."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from failoverd.clock import walltime
from lab.cluster import NODES, Lab, LabError
from lab.decisions import read_decisions, timeline


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    rep = yield
    setattr(item, f"rep_{rep.when}", rep)
    return rep


@pytest.fixture(autouse=True)
def decisions_on_failure(request: pytest.FixtureRequest) -> Iterator[None]:
    started = walltime() - 1.0
    yield
    report = getattr(request.node, "rep_call", None)
    if report is None or not report.failed:
        return
    lab = Lab()
    found = [
        d for node in NODES for d in read_decisions(lab.daemon_log(node), node, since_wall=started)
    ]
    print(f"\n--- the daemons' decisions during {request.node.name} ---")
    print(timeline(found))
    # The lab is shared by the tests after this one: leave it as they expect it.
    try:
        done = lab.repair()
    except LabError as e:
        print(f"--- the lab could not be repaired after {request.node.name}: {e}")
        return
    print(f"--- the lab repaired after {request.node.name}: {'; '.join(done) or 'nothing to do'}")
