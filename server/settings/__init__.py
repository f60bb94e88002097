"""Server settings: one ``ServerConfig`` field per option, the single source
of its name, default, unit and help.

Names. A setting's name is its field name; its flag is ``--`` and the name
with dashes (``grace_s``: ``--grace-s``), its environment variable
``INFERD_`` and the name in capitals (``INFERD_GRACE_S``). One exception:
``load_models`` is the repeatable ``--load-model NAME`` (the variable holds
a comma-separated list). Booleans get ``--x`` and ``--no-x``.

Units, always in the name. Durations are seconds, named ``*_s`` (a float:
``0.0005``). Sizes are bytes, named ``*_bytes``; on the command line and in
the environment a size may carry a binary unit (``64MiB``, ``16KiB``).
Counts carry no unit (``max_elements``, ``workers``).

Precedence: a flag beats the variable, the variable beats the default. An
empty variable counts as unset. Defaults are the embedded ones
(``ServerConfig(model_repository=...)``) except where ``inferd serve`` owns
process-wide state (``gc_freeze``, ``gil_switch_interval_s``) or builds the
demo repository (``model_repository``).

Old flag spellings (``--grace``, ``--max-message-mb``, ...) still work for
one release and log a deprecation warning naming the new flag.
"""

from inferd.server.settings.checks import SettingsError, check, connection_age_options
from inferd.server.settings.command_line import (
    DESCRIPTION,
    SETTINGS,
    ServeSettings,
    add_serve_arguments,
    parse_serve_settings,
    read_serve_settings,
)
from inferd.server.settings.config import ServerConfig
from inferd.server.settings.options import Setting

__all__ = [
    "DESCRIPTION",
    "SETTINGS",
    "ServeSettings",
    "ServerConfig",
    "Setting",
    "SettingsError",
    "add_serve_arguments",
    "check",
    "connection_age_options",
    "parse_serve_settings",
    "read_serve_settings",
]
