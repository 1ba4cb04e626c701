"""What an analyzer reports: a message with an Istio-style code, a level, the resource, a fix hint. PURE."""
from __future__ import annotations

from dataclasses import dataclass

ERROR, WARNING, INFO = "Error", "Warning", "Info"


@dataclass(frozen=True)
class Message:
    code: str
    level: str
    resource: str  # "VirtualService default/reviews"
    message: str
    hint: str = ""
    path: str = ""

    def __str__(self) -> str:
        where = f" field {self.path}" if self.path else ""
        hint = f" (fix: {self.hint})" if self.hint else ""
        return f"{self.level} [{self.code}] ({self.resource}{where}) {self.message}{hint}"

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v}
