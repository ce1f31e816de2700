"""The public Python API is ``agent.events.__all__`` and the README lists exactly it (issue 17 item 8: it was
whatever ``dir()`` held, 64 names with the tests' MockTransport among them)."""

import re
from pathlib import Path

import agent
import agent.events

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_lists_exactly_the_public_names():
    block = re.search(r"<!-- api-names -->(.*?)<!-- /api-names -->", README.read_text(), re.S).group(1)
    listed = re.findall(r"`([A-Za-z_]+)`", block)
    assert sorted(listed) == sorted(agent.events.__all__)
    assert len(listed) == len(set(listed))


def test_every_public_name_exists_and_nothing_of_the_tests_is_in_it():
    for name in agent.events.__all__:
        assert getattr(agent, name) is getattr(agent.events, name)
    assert "MockTransport" not in agent.events.__all__
    assert not hasattr(agent.events, "MockTransport")
