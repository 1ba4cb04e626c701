"""xDS protocol core (sans-I/O): stream state machines, response marshalling, push debouncing."""
from mizzen.xds.pushqueue import ALL, PushEvent, PushQueue
from mizzen.xds.stream import DeltaStream, Response, SotwStream, new_stream, version_of

__all__ = ["ALL", "PushEvent", "PushQueue", "DeltaStream", "Response", "SotwStream", "new_stream", "version_of"]
