"""The playbooks parse, prompt for nothing, and the AWX definitions in awx/ fit them: every job
template runs an existing playbook, every survey variable is one its playbook reads, every
survey is well formed, and the credential type injects what the playbooks read."""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.playbooks.awx_runner import OSAM_ENV, PLAYBOOKS, REPO, VENV_BIN, run_playbook, unreachable_guest

AWX = REPO / "awx"
TEMPLATES = sorted((AWX / "job_templates").glob("*.yml"))
SURVEY_TYPES = {"text", "textarea", "password", "integer", "float", "multiplechoice", "multiselect"}


def load(path: Path):
    return yaml.safe_load(path.read_text())


def playbook_text(playbook: Path) -> str:
    """The playbook with the vars files it loads: where its variables are read."""
    text = playbook.read_text()
    for play in load(playbook):
        for vars_file in play.get("vars_files", []):
            text += (playbook.parent / vars_file).read_text()
    return text


@pytest.mark.parametrize("playbook", [f"playbooks/{name}" for name in PLAYBOOKS] + ["awx/setup.yml"])
def test_syntax_check(playbook):
    env = dict(os.environ, PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    proc = subprocess.run([str(VENV_BIN / "ansible-playbook"), "--syntax-check", "-i", "inventories/example",
                           playbook], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("name", PLAYBOOKS)
def test_playbook_prompts_for_nothing_and_its_hosts_are_a_variable(name):
    for play in load(REPO / "playbooks" / name):
        assert "vars_prompt" not in play, f"{name}: AWX cannot answer prompts; use a variable with a default"
        assert play["hosts"] == "localhost" or re.fullmatch(r"\{\{ osam_\w+_hosts \| default\('osam_\w+'\) \}\}",
                                                            play["hosts"]), play["hosts"]


def test_every_playbook_has_a_job_template():
    assert sorted(load(t)["playbook"] for t in TEMPLATES) == sorted(f"playbooks/{name}" for name in PLAYBOOKS)


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.stem)
def test_job_template_runs_an_existing_playbook_and_its_survey_asks_for_variables_it_reads(template):
    spec = load(template)
    playbook = REPO / spec["playbook"]
    assert playbook.is_file(), f"{template.name}: no playbook {spec['playbook']}"
    text = playbook_text(playbook)
    survey = spec["survey_spec"]["spec"]
    assert spec["survey_enabled"] is True and survey
    variables = [question["variable"] for question in survey]
    assert len(set(variables)) == len(variables), f"{template.name}: a variable is asked twice"
    unread = [v for v in variables if not re.search(rf"\b{re.escape(v)}\b", text)]
    assert unread == [], f"{template.name}: {spec['playbook']} never reads {unread}"


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.stem)
def test_survey_questions_are_well_formed(template):
    for question in load(template)["survey_spec"]["spec"]:
        where = f"{template.name}: {question.get('variable')}"
        assert {"question_name", "variable", "type", "required"} <= set(question), where
        assert question["type"] in SURVEY_TYPES, where
        assert isinstance(question["required"], bool), where
        default = question.get("default")
        if question["type"] in ("multiplechoice", "multiselect"):
            assert question["choices"] and all(isinstance(c, str) for c in question["choices"]), where
            assert default in (None, "") or default in question["choices"], where
        if question["type"] == "integer" and default is not None:
            assert isinstance(default, int) and question["min"] <= default <= question["max"], where
        if question["type"] == "text" and default:
            assert question.get("min", 0) <= len(default) <= question.get("max", 1024), where


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.stem)
def test_job_template_fields_are_ones_awx_awx_job_template_takes(template):
    """awx/setup.yml passes them to awx.awx.job_template."""
    module = next((VENV_BIN.parent / "lib").glob(
        "python3*/site-packages/ansible_collections/awx/awx/plugins/modules/job_template.py")).read_text()
    documentation = module.split("DOCUMENTATION = ")[1]
    options = yaml.safe_load(documentation[3:].split(documentation[:3])[0])["options"]
    assert set(load(template)) - set(options) == set()


def test_credential_type_injects_what_the_playbooks_read():
    credential = load(AWX / "credential_types" / "osam_api.yml")
    injected = set(credential["injectors"]["env"])
    read = set(re.findall(r"lookup\('ansible.builtin.env', '(OSAM_\w+)'\)",
                          (REPO / "playbooks" / "vars" / "osam_api.yml").read_text()))
    assert injected == read - {"OSAM_PKI"}
    assert injected <= set(OSAM_ENV)
    fields = {field["id"] for field in credential["inputs"]["fields"]}
    used = set(re.findall(r"\{\{ (?:tower\.filename\.)?(\w+) \}\}", str(credential["injectors"])))
    assert used == fields


SCHEDULE_RULE = "osam_switchover_at (an ISO 8601 time with a zone) goes with scheduled"


@pytest.mark.parametrize("playbook, extravars, message", [
    ("migrate.yml", {"osam_switchover": "scheduled"}, SCHEDULE_RULE),
    ("switchover.yml", {"osam_switchover_state": "started", "osam_switchover_at": "2026-12-01T02:00:00Z"},
     SCHEDULE_RULE),
    ("status.yml", {}, "no host in the osam_receiver group: set osam_api_url"),
])
def test_a_wrong_or_missing_setting_is_named_before_anything_is_called(tmp_path, playbook, extravars, message):
    """No receiver runs here: the play must stop on its own check, saying what to fix."""
    inventory = {"all": {"children": {"osam_guests": {"hosts": {"web01": unreachable_guest()}}}}}
    run = run_playbook(tmp_path, f"playbooks/{playbook}", inventory, extravars)
    assert run.status == "failed" and run.failed("web01") == 1, run.explain()
    assert message in " ".join(run.stdout.split()), run.explain()
