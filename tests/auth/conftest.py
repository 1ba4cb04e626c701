from tests.etcd.fixtures import etcd_cluster, etcd_prefix  # noqa: F401  (fixtures)
