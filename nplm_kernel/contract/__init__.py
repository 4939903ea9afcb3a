"""The backend contract (contract.py: what a backend provides, the capabilities the shared layer may
ask about) and the registry of backends with their settings schema (registry.py)."""

from .contract import (
    CONTRACT_MEMBERS,
    SETTING_ROLES,
    Backend,
    BackendFit,
    backend_device,
    contract_gaps,
    finish_fit,
    require_fitted,
    role_setting,
)
from .registry import (
    BackendEntry,
    Setting,
    backend_entry,
    backend_names,
    build_backend,
    loadable_class,
    loadable_paths,
    register_backend,
    settings_of,
)

__all__ = ["CONTRACT_MEMBERS", "SETTING_ROLES", "Backend", "BackendFit", "backend_device", "contract_gaps", "finish_fit",
           "require_fitted", "role_setting", "BackendEntry", "Setting", "backend_entry",
           "backend_names", "build_backend", "loadable_class", "loadable_paths", "register_backend", "settings_of"]
