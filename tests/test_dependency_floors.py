"""requirements-render.txt's floors are never below what the other deploy packages themselves require.

A floor under what, say, fastapi requires can never be installed with it: it only misleads a reader
about which releases the API runs on.
"""

import importlib.metadata

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version
from test_deploy import deploy_requirements


def floor(specifier: SpecifierSet) -> Version | None:
    """The lowest release a specifier allows, from its >=, == and ~= clauses; None when it sets no floor."""
    return max(
        (Version(clause.version) for clause in specifier if clause.operator in (">=", "==", "~=")),
        default=None,
    )


def test_no_deploy_floor_sits_below_what_another_deploy_package_requires():
    ours = {
        canonicalize_name(requirement.name): requirement for requirement in deploy_requirements()
    }
    too_low = []
    for requirement in ours.values():
        for line in importlib.metadata.requires(requirement.name) or []:
            theirs = Requirement(line)
            name = canonicalize_name(theirs.name)
            if name not in ours or (
                theirs.marker is not None and not theirs.marker.evaluate({"extra": ""})
            ):
                continue
            needed, floored = floor(theirs.specifier), floor(ours[name].specifier)
            if needed is not None and (floored is None or floored < needed):
                too_low.append(f"{name}: ours {floored}, {requirement.name} requires {needed}")
    assert not too_low
