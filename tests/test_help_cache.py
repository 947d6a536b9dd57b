"""The cached `--help` of a heavy command (`clsgen_hf.commands.help_cache`) is printed only while everything its text
depends on is unchanged, and a cache that cannot be read or written is passed over. The cached `train --help` against
the live one, and what it imports: tests/test_startup.py."""

import argparse
import shutil

import pytest
from huggingface_hub import constants

from clsgen_hf.commands import help_cache


@pytest.fixture
def parser(tmp_path, monkeypatch) -> argparse.ArgumentParser:
    """A parser whose help is cached under `tmp_path/hf`, keyed on a copy of clsgen_hf's sources."""
    monkeypatch.setattr(constants, "HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(help_cache, "SOURCES", shutil.copytree(help_cache.SOURCES, tmp_path / "clsgen_hf",
                                                               ignore=shutil.ignore_patterns("__pycache__")))
    monkeypatch.setenv("COLUMNS", "97")
    parser = argparse.ArgumentParser(prog="clsgen-hf demo")
    parser.add_argument("--rows", type=int, default=3, help="Rows to read.")
    return parser


def test_cached_help_misses_when_a_version_the_sources_or_the_width_change(parser, tmp_path, monkeypatch):
    text = help_cache.save_help("demo", parser)
    assert text == parser.format_help() and help_cache.cached_help("demo") == text

    monkeypatch.setenv("COLUMNS", "60")
    assert help_cache.cached_help("demo") is None
    monkeypatch.setenv("COLUMNS", "97")
    assert help_cache.cached_help("demo") == text

    source = help_cache.SOURCES / "commands" / "train.py"
    original = source.read_text()
    source.write_text(original + "# edited\n")
    assert help_cache.cached_help("demo") is None
    source.write_text(original)
    assert help_cache.cached_help("demo") == text

    site = tmp_path / "site"
    (site / "trl-99.0.dist-info").mkdir(parents=True)
    (site / "trl-99.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: trl\nVersion: 99.0\n")
    monkeypatch.syspath_prepend(str(site))  # TRL 99.0 now shadows the installed one
    assert help_cache.cached_help("demo") is None


@pytest.mark.parametrize("content", [b"\xff\xfe", b'{"key": "', b"[1, 2]", b'"text"', b'{"help": "text"}',
                                     b'{"key": "0", "help": "text"}'])
def test_a_corrupt_cache_file_is_a_miss_and_is_rewritten(parser, content):
    path = help_cache.cache_file("demo")
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    assert help_cache.cached_help("demo") is None
    assert help_cache.save_help("demo", parser) == help_cache.cached_help("demo") == parser.format_help()


def test_an_unwritable_cache_is_skipped(parser, tmp_path, monkeypatch):
    (tmp_path / "not-a-folder").write_text("")
    monkeypatch.setattr(constants, "HF_HOME", str(tmp_path / "not-a-folder"))
    assert help_cache.save_help("demo", parser) == parser.format_help()
    assert help_cache.cached_help("demo") is None
