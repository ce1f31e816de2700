"""The fault harness in its short form: the whole agent, 50 SIGKILLs, mosquitto and RabbitMQ kills, WATS faults, a
full disk, two corrupted journals, eight wall-clock steps, seven power cuts (as root with FUSE: one in the first second,
one in a salvage, two in checkpoints) and bad input at moments drawn from a fixed seed, then the reconciliation (see harness.py; the long form is documented there and in docs/faults.md)."""

from tests.faults.harness import run


def test_the_whole_agent_survives_the_faults_users_fear_and_reconciles(tmp_path):
    checks, summary = run(tmp_path, seed=11, kills=50, seconds=90, results=200, serial_messages=300, power_cuts=6)
    print(summary)
    failed = [f"{c.name}: {c.detail}" for c in checks if not c.ok]
    assert not failed, f"{summary}\n" + "\n".join(failed)
