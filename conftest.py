"""Every verdict a notebook prints comes from :func:`lmcourse.spread.report` (checked on the nbval runs).

nbval executes each notebook cell in a kernel that inherits this process's environment. ``report`` appends each
line it prints to the file named by ``LMCOURSE_VERDICT_LOG``; after each cell, any printed line that reads as a
verdict ("no measurable difference", "not measured", "95 % CI", "is higher than") but is not in that file fails
the cell: it was built by the notebook itself, not by the protocol's formatter, and was not recorded.
"""

from __future__ import annotations

import os
import tempfile

import pytest

_LOG = os.path.join(tempfile.mkdtemp(prefix="lmcourse-verdicts-"), "verdicts.jsonl")
os.environ["LMCOURSE_VERDICT_LOG"] = _LOG


def _printed(outputs) -> str:
    parts = []
    for out in outputs or []:
        if out.get("output_type") == "stream":
            parts.append(out.get("text", ""))
        elif out.get("output_type") in {"display_data", "execute_result"}:
            parts.append(out.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    outputs = getattr(item, "test_outputs", None)
    if call.when != "call" or not rep.passed or outputs is None:
        return
    from lmcourse.spread import reported_lines, stray_verdict_lines

    stray = stray_verdict_lines(_printed(outputs), reported_lines(_LOG))
    if stray:
        rep.outcome = "failed"
        rep.longrepr = ("this cell printed a verdict that lmcourse.spread.report did not print (and so did not "
                        "record under verdict/<name>/): print verdicts with report(name, compare(...)):\n  "
                        + "\n  ".join(stray))
