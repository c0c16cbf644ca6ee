"""show_config(): what this fastnn can do on this machine, and why."""

from __future__ import annotations


def show_config() -> None:  # filled in below the kernel registry
    raise NotImplementedError
