"""`LlamaCLSGenConfig`/`LlamaForCLSGen` registered with transformers' Auto classes without `import clsgen_hf` paying
for torch: the registration runs as soon as transformers' Auto classes have been imported, by anyone (at once if they
already are).

Registering needs the model class, so torch; importing it in `clsgen_hf/__init__.py` made every `clsgen-hf --help`
load torch. Python has no post-import hooks (PEP 369 was withdrawn): until the registration has run, a finder first
in `sys.meta_path` wraps each module's loader and, when an outermost import has finished and `configuration_auto` is
loaded, registers and removes itself. Waiting for the outermost import matters: transformers imports its Auto modules
from half-initialized modules (`modeling_utils`) that the CLSGen classes import in turn.
"""

from __future__ import annotations

import sys


CONFIGURATION_AUTO = "transformers.models.auto.configuration_auto"


def register() -> None:
    """Register the CLSGen classes with the Auto classes, and for saving (which copies their code files next to the
    weights, for `trust_remote_code=True` loading)."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    from .configuration_clsgen import LlamaCLSGenConfig
    from .modeling_clsgen import LlamaForCLSGen

    AutoConfig.register(LlamaCLSGenConfig.model_type, LlamaCLSGenConfig, exist_ok=True)
    for auto_class in (AutoModel, AutoModelForCausalLM):
        auto_class.register(LlamaCLSGenConfig, LlamaForCLSGen, exist_ok=True)
    LlamaCLSGenConfig.register_for_auto_class("AutoConfig")
    LlamaForCLSGen.register_for_auto_class("AutoModelForCausalLM")


class _Loader:
    """A module's own loader, counting nested imports."""

    depth = 0

    def __init__(self, loader):
        self.loader = loader

    def __getattr__(self, name: str):  # create_module, get_source, is_package, get_resource_reader, ...
        return getattr(self.loader, name)

    def exec_module(self, module) -> None:
        _Loader.depth += 1
        try:
            self.loader.exec_module(module)
        finally:
            _Loader.depth -= 1
        if _Loader.depth == 0 and CONFIGURATION_AUTO in sys.modules and _FINDER in sys.meta_path:
            sys.meta_path.remove(_FINDER)  # first: the registration's own imports must not come back here
            register()


class _Finder:
    def find_spec(self, name, path=None, target=None):
        for finder in sys.meta_path:
            if finder is not self and hasattr(finder, "find_spec"):
                spec = finder.find_spec(name, path, target)
                if spec is not None:
                    if spec.loader is not None:
                        spec.loader = _Loader(spec.loader)
                    return spec
        return None


_FINDER = _Finder()


def install() -> None:
    """Register now if transformers' Auto classes are loaded, else once they are."""
    if CONFIGURATION_AUTO in sys.modules:
        register()
    elif _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)
