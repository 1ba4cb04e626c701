"""Config analysis (`mizzen analyze`): pure analyzers over the config being analyzed."""
from .analyzers import ANALYZERS, Message, analyze

__all__ = ["ANALYZERS", "Message", "analyze"]
