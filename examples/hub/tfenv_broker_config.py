# The tfenv broker's own configuration (traitlets), loaded by the hub-managed service
# that examples/hub/jupyterhub_config.py declares (`--config` on its command line; the
# values the hub config passes as flags — runtime root, checkpoint root, quotas — win).
# See docs/broker.md for every rule the broker enforces.

c = get_config()  # type: ignore[name-defined]  # noqa: F821 - provided by traitlets

# Environments only some users may start: environment id -> groups (Unix groups, and
# JupyterHub groups). Everybody else sees them in the kernel picker, and a start is
# refused with a message naming the group.
c.TFEnvBroker.environment_groups = {"tf220-gpu": ["tfenv-gpu"]}

# Notebook folders the broker mounts into kernels: below the caller's home only ({home}
# is the caller's home). Add shared project folders here, e.g. "/srv/projects/{user}".
c.TFEnvBroker.allowed_mount_roots = ["{home}"]

# Hub users whose Unix account has a uid below this are system accounts and are refused
# (uid/gid 0 and 65534 always are). Lower it only if this host's users start below 1000.
# c.TFEnvBroker.min_uid = 1000

# Give each broker that shares this Docker engine (several hubs on one host) its own id;
# it is the org.jupyter.tfenv.broker label of its kernels (default: the service name).
# c.TFEnvBroker.broker_id = "tfenv-broker"

# The only environment variables a user's server may pass to its kernels.
# c.TFEnvBroker.env_allowlist = ["LANG", "LC_ALL", "LC_CTYPE", "TZ", "JPY_SESSION_NAME"]

# Checkpoints: host folders below checkpoint_root ("bind", the default), or one named
# Docker volume per user and environment ("volume", e.g. on NFS).
# c.TFEnvBroker.checkpoint_storage = "bind"
