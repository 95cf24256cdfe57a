"""The Lambda entry points. Importing any of them registers the SnapStart hooks (a no-op outside
Lambda's Python runtime, and when the function has no SnapStart the runtime never calls them)."""

from handlers._snapstart import register as _register_snapstart_hooks

_register_snapstart_hooks()
