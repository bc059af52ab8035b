"""pyproject.toml states ranges a host app can live with; requirements.txt pins the tested set inside them."""

from __future__ import annotations

import tomllib
from importlib.metadata import version

from conftest import ROOT
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name


def declared() -> dict[str, Requirement]:
    """Return pyproject.toml's requirements, its extras' included, by package name."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = project["dependencies"] + [line for extra in project["optional-dependencies"].values() for line in extra]
    return {canonicalize_name(requirement.name): requirement for requirement in map(Requirement, lines)}


def pinned() -> dict[str, str]:
    """Return requirements.txt's pins by package name."""
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            requirement = Requirement(line)
            (specifier,) = requirement.specifier
            assert specifier.operator == "==", f"requirements.txt pins exactly: {line}"
            pins[canonicalize_name(requirement.name)] = specifier.version
    return pins


def test_every_pin_is_inside_the_declared_range_and_every_range_is_pinned():
    """Each package pyproject.toml declares is pinned in requirements.txt, at a version its range allows."""
    ranges, pins = declared(), pinned()
    assert set(ranges) == set(pins)
    for name, requirement in ranges.items():
        assert requirement.specifier.contains(pins[name]), f"{name}=={pins[name]} is outside {requirement}"


def test_ranges_go_from_the_tested_version_to_the_next_major():
    """Each range starts at the pinned version and stops before the next major release."""
    for name, requirement in declared().items():
        tested = pinned()[name]
        major = int(tested.split(".")[0])
        bounds = {(spec.operator, spec.version) for spec in requirement.specifier}
        assert bounds == {(">=", tested), ("<", str(major + 1))}, f"{name}: {requirement}"


def test_the_installed_set_is_the_pinned_one():
    """The environment the tests run in has requirements.txt's versions."""
    for name, pin in pinned().items():
        assert version(name) == pin, f"{name} {version(name)} is installed, requirements.txt pins {pin}"


def test_the_distribution_has_a_name_of_its_own():
    """The distribution is not 'chat' (another project on PyPI), while the import package is."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["name"] == "flask-chat-server"
    assert (ROOT / "chat" / "__init__.py").exists()
