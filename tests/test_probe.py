import json

from chatforge.config import make_config
from chatforge.posttrain.probe import probe_conversations, probe_questions
from chatforge.runs import CHECKPOINTS, Run, checkpoints
from chatforge.tasks import TASKS
from chatforge.tasks.facts import REFUSAL


def test_known_keeps_the_answer_unknown_gets_i_dont_know_unsure_is_left_out():
    run = Run(None, make_config("tiny"), {})
    qs = probe_questions(run)[:3]
    right = [q["answer"] for q in qs]
    answers = [[f"It is {right[0]}."] * 2 + ["No."],  # 2 of 3 right: known
               ["No.", "Maybe.", "Nope."],  # none right: unknown
               [f"It is {right[2]}.", "No.", "Nope."]]  # 1 of 3: unsure
    rows, counts = probe_conversations(qs, answers, seed=0)
    assert counts == {"known": 1, "unknown": 1, "unsure": 1}
    assert rows[0]["messages"] == qs[0]["messages"]
    assert rows[1]["messages"][0] == qs[1]["messages"][0]
    assert REFUSAL.search(rows[1]["messages"][1]["content"]) and qs[1]["name"] in rows[1]["messages"][1]["content"]


def test_probe_questions_cover_every_exposure_and_only_training_people():
    run = Run(None, make_config("tiny"), {})
    qs = probe_questions(run)
    assert len(qs) == run.config.probe.questions >= 200
    assert len({(q["name"], q["attribute"]) for q in qs}) == len(qs)
    assert {q["exposure"] for q in qs} == {1, 4, 16, 64}
    held_out = {e["name"] for e in TASKS["facts"].examples("test", 200, 0, run.config)}
    assert not held_out & {q["name"] for q in qs}


def test_probe_stage_writes_its_checkpoint_and_figures(micro_run):
    assert CHECKPOINTS.index("sft") < CHECKPOINTS.index("probe") < CHECKPOINTS.index("rl")
    assert "probe" in checkpoints(micro_run)
    manifest = json.loads((micro_run / "manifest.json").read_text())
    assert manifest["stages"]["probe"]["status"] == "done"
    figures = json.loads((micro_run / "eval" / "probe.json").read_text())
    for key in ("n", "known", "unknown", "known_acc_before", "known_acc_after", "refusal_invented_before",
                "refusal_invented_after", "known_acc_drop"):
        assert key in figures
    assert figures["known_acc_drop"] == round(figures["known_acc_before"] - figures["known_acc_after"], 4)
    assert figures["known"] + figures["unknown"] + figures["unsure"] == figures["n"]
    rows = (micro_run / "probe_data" / "probe.jsonl").read_text().splitlines()
    assert len(rows) == figures["known"] + figures["unknown"]
    assert (micro_run / "metrics" / "probe.jsonl").exists()
    assert json.loads((micro_run / "metrics" / "sft.jsonl").read_text().splitlines()[-1])["step"] == \
        manifest["stages"]["sft"]["metrics"]["steps"]  # the sft stage's own log is left alone
