"""The console and the capture page are served at the host's root on one machine but under the
API stage's path in the cloud (`https://.../v1/`). Every URL the pages use must therefore be
relative to the page, never to the host's root: a root-relative `/static/console.js` would load
from outside the stage and the deployed page would come up without its script."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

STATIC = Path(__file__).resolve().parents[2] / "src" / "face_dedup_api" / "static"
PAGES = sorted([*STATIC.glob("*.html"), *STATIC.glob("capture/*.html")])
SCRIPTS = sorted([*STATIC.glob("*.js"), *STATIC.glob("capture/*.js")])

# An attribute or a fetch/import whose URL starts at the host's root.
ROOT_RELATIVE_ATTRIBUTE = re.compile(r"""\b(?:src|href|action)\s*=\s*["']/(?!/)""")
ROOT_RELATIVE_CALL = re.compile(r"""\b(?:fetch|import)\s*\(\s*["'`]/(?!/)""")
ROOT_RELATIVE_IMPORT = re.compile(r"""^\s*import\s[^;]*\bfrom\s+["']/(?!/)""", re.MULTILINE)


def test_the_pages_and_scripts_are_found() -> None:
    assert {p.name for p in PAGES} >= {"console.html", "capture.html"}
    assert {p.name for p in SCRIPTS} >= {"console.js", "signin.js", "capture.js", "analysis.js"}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_pages_link_their_files_relative_to_themselves(page: Path) -> None:
    found = ROOT_RELATIVE_ATTRIBUTE.findall(page.read_text())
    assert not found, f"{page.name}: root-relative links {found}"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_call_the_api_relative_to_the_page(script: Path) -> None:
    text = script.read_text()
    found = ROOT_RELATIVE_CALL.findall(text) + ROOT_RELATIVE_IMPORT.findall(text)
    assert not found, f"{script.name}: root-relative requests {found}"


def test_the_check_catches_a_root_relative_link() -> None:
    assert ROOT_RELATIVE_ATTRIBUTE.search('<script src="/static/console.js"></script>')
    assert ROOT_RELATIVE_CALL.search('await fetch("/capture/upload", {')
    assert ROOT_RELATIVE_IMPORT.search('import * as ort from "/capture/ort/x.mjs";')
    assert not ROOT_RELATIVE_ATTRIBUTE.search('<link href="static/console.css">')
    assert not ROOT_RELATIVE_CALL.search('await fetch(here("/capture/upload"), {')
