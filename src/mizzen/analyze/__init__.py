"""Config analysis (`mizzen analyze`): pure analyzers over a ConfigIndex."""
from .analyzers import ANALYZERS, Message, analyze

__all__ = ["ANALYZERS", "Message", "analyze"]
