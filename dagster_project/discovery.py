"""Stage discovery: every asset and asset check under ``assets/<domain>/``, grouped by domain.

Each subpackage of ``assets`` is a domain (``data``, ``tokens``, ``pretrain``, later ``scaling``,
``posttrain`` …); its modules are walked recursively, and each asset lands in the group named after its
domain. Checks live next to their assets, in the same modules. Adding a stage is adding a module: the
definitions, the jobs, dvc.yaml and the tests' asset list all come from here.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

import dagster as dg

ASSET_PACKAGE = "assets"


def domain_packages(package: str = ASSET_PACKAGE) -> dict[str, ModuleType]:
    """``{domain: module}`` for every subpackage of ``package``, sorted by name."""
    root = importlib.import_module(package)
    return {
        info.name: importlib.import_module(f"{package}.{info.name}")
        for info in sorted(pkgutil.iter_modules(root.__path__), key=lambda i: i.name)
        if info.ispkg
    }


def discover(
    package: str = ASSET_PACKAGE,
) -> tuple[list[dg.AssetsDefinition], list[dg.AssetChecksDefinition]]:
    """All assets (group = their domain) and all asset checks found under ``package``."""
    assets: list = []
    checks: list = []
    for domain, module in domain_packages(package).items():
        assets += dg.load_assets_from_package_module(module, group_name=domain)
        checks += dg.load_asset_checks_from_package_module(module)
    return assets, checks


ASSETS, CHECKS = discover()
