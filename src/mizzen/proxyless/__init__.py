"""Proxyless gRPC clients: the `GRPC_XDS_BOOTSTRAP` file (`bootstrap.py`, pure) and `mizzen proxyless-bootstrap`
(`commands.py`). What the control plane serves them is `translate/proxyless.py`."""
