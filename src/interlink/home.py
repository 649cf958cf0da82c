"""The mesh home: one folder holding everything a hub needs.

    <home>/mesh.yaml             the policy (who may do what) and hub settings
    <home>/hub.key               the hub's Ed25519 private key (owner-only)
    <home>/hub.pub               its public half, to give to anyone who verifies credentials
    <home>/agents/<name>.cred    each enrolled agent's credential and private key (owner-only)
    <home>/data/interlink.db     the embedded store (SQLite, WAL): calls, registry, audit
    <home>/data/interlink.db.lock  held by the running hub (one hub per store)
    <home>/audit.head            the latest signed audit checkpoint, kept outside the store

The home is `--home`, else `$INTERLINK_HOME`, else `./.interlink`.
"""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from .envelope import valid_agent_name
from .errors import ConfigError
from .identity import DEFAULT_CREDENTIAL_DAYS, CredentialFile, HubKey, new_agent_key
from .policy import Policy, RemoteA2A, dump_policy, parse_policy

DEFAULT_HOME = ".interlink"
RESERVED_NAMES = frozenset({"hub"})


def resolve_home(home: str | os.PathLike[str] | None) -> Path:
    if home:
        return Path(home).expanduser().resolve()
    env = os.environ.get("INTERLINK_HOME")
    return Path(env or DEFAULT_HOME).expanduser().resolve()


def _connectable(host: str) -> str:
    """Where a client on this machine reaches a hub bound to `host`."""
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host


_HUB_ADDRESSES: dict[Path, tuple[tuple[int, int], tuple[str, Path | None]]] = {}


def hub_address(root: Path) -> tuple[str, Path | None]:
    """(the hub's WebSocket URL, the CA its clients trust or None) from the home's mesh.yaml,
    parsed once per version of the file: every agent a process starts asks, and parsing a
    policy of a thousand agents a thousand times made connecting them take half a minute."""
    path = root / "mesh.yaml"
    stat = path.stat()
    version = (stat.st_mtime_ns, stat.st_size)
    known = _HUB_ADDRESSES.get(path)
    if known is not None and known[0] == version:
        return known[1]
    home = MeshHome(root)
    policy = home.load_policy()
    found = (home.hub_url(policy), home.tls_ca(policy))
    _HUB_ADDRESSES[path] = (version, found)
    return found


class MeshHome:
    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = resolve_home(root)

    @property
    def policy_path(self) -> Path:
        return self.root / "mesh.yaml"

    @property
    def hub_key_path(self) -> Path:
        return self.root / "hub.key"

    @property
    def agents_dir(self) -> Path:
        return self.root / "agents"

    @property
    def db_path(self) -> Path:
        return self.root / "data" / "interlink.db"

    def store_url(self, override: str | None = None) -> str:
        """Where this mesh's store is: `override`, else `hub.store` in mesh.yaml, else the
        embedded SQLite file."""
        if override:
            return override
        configured = self.load_policy().hub.store
        return configured or f"sqlite:///{self.db_path}"

    def store_exists(self, url: str | None = None) -> bool:
        """Whether there is a store to read yet (an embedded file is made by the first hub;
        a server-side store is always asked)."""
        url = url or self.store_url()
        return not url.startswith("sqlite:///") or Path(url[len("sqlite://"):]).exists()

    @property
    def audit_head_path(self) -> Path:
        """The latest signed audit checkpoint, kept outside the store."""
        return self.root / "audit.head"

    def credential_path(self, agent: str) -> Path:
        return self.agents_dir / f"{agent}.cred"

    def exists(self) -> bool:
        return self.policy_path.exists() or self.hub_key_path.exists()

    def require(self) -> None:
        if not self.policy_path.exists() or not self.hub_key_path.exists():
            raise ConfigError(f"{self.root} is not a mesh home (no mesh.yaml or hub.key): "
                              f"run `interlink init --home {self.root}` first")

    # -- init --------------------------------------------------------------------------------

    def init(self, *, force: bool = False, host: str = "127.0.0.1", port: int | None = None
             ) -> HubKey:
        """Make the home: a new hub key and an empty (deny-all) policy."""
        if self.exists():
            if not force:
                raise ConfigError(
                    f"{self.root} already holds a mesh home; refusing to overwrite its hub key "
                    "and policy (every credential it issued would stop working). "
                    "Use --force to replace it, or --home to choose another folder.")
            for path in (self.policy_path, self.hub_key_path, self.root / "hub.pub",
                         self.audit_head_path):
                path.unlink(missing_ok=True)
            shutil.rmtree(self.agents_dir, ignore_errors=True)
            shutil.rmtree(self.root / "data", ignore_errors=True)
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        hub = HubKey.generate()
        hub.save(self.hub_key_path)
        (self.root / "hub.pub").write_text(hub.public_b64 + "\n")
        policy = Policy()
        policy.hub.host = host
        if port is not None:
            policy.hub.port = port
        self.save_policy(policy)
        self.agents_dir.mkdir(exist_ok=True)
        return hub

    # -- policy ------------------------------------------------------------------------------

    def load_policy(self) -> Policy:
        self.require()
        return parse_policy(self.policy_path.read_text(), str(self.policy_path))

    def save_policy(self, policy: Policy) -> None:
        tmp = self.policy_path.with_suffix(".yaml.tmp")
        tmp.write_text(dump_policy(policy))
        os.replace(tmp, self.policy_path)

    def hub_key(self) -> HubKey:
        self.require()
        return HubKey.load(self.hub_key_path)

    def hub_url(self, policy: Policy | None = None) -> str:
        policy = policy or self.load_policy()
        scheme = "wss" if policy.hub.tls else "ws"
        return f"{scheme}://{_connectable(policy.hub.host)}:{policy.hub.port}/ws"

    def hub_http_url(self, policy: Policy | None = None) -> str:
        policy = policy or self.load_policy()
        scheme = "https" if policy.hub.tls else "http"
        return f"{scheme}://{_connectable(policy.hub.host)}:{policy.hub.port}"

    def home_path(self, path: str) -> Path:
        """A path from mesh.yaml: relative to the home, or absolute."""
        return (self.root / path) if not Path(path).is_absolute() else Path(path)

    def tls_files(self, policy: Policy | None = None) -> tuple[Path, Path] | None:
        """The hub's (certificate, key), when it serves TLS."""
        tls = (policy or self.load_policy()).hub.tls
        return (self.home_path(tls.cert), self.home_path(tls.key)) if tls else None

    def tls_ca(self, policy: Policy | None = None) -> Path | None:
        """The CA this home's agents and CLI trust for its hub (None: the system's)."""
        tls = (policy or self.load_policy()).hub.tls
        return self.home_path(tls.ca) if tls and tls.ca else None

    def hub_verify(self, policy: Policy | None = None) -> Any:
        """What an HTTPS client of this home checks the hub's certificate against (httpx's
        `verify=`): an SSL context over the home's CA, or True (the system's trust store)."""
        from .tls import client_context
        ca = self.tls_ca(policy)
        return client_context(ca) if ca else True

    def make_tls(self, hosts: list[str] | None = None) -> tuple[Path, Path, Path]:
        """A private CA and a hub certificate signed by it in `<home>/tls/`, and mesh.yaml's
        `hub.tls` pointing at them: (CA, certificate, key)."""
        from .tls import default_hosts, make_ca, make_hub_cert
        policy = self.load_policy()
        directory = self.root / "tls"
        ca, ca_key = make_ca(directory)
        cert, key = make_hub_cert(directory, ca, ca_key,
                                  hosts or default_hosts(policy.hub.host))

        def change(doc: CommentedMap) -> None:
            hub = doc.setdefault("hub", CommentedMap())
            hub["tls"] = CommentedMap(cert="tls/hub.pem", key="tls/hub-key.pem",
                                      ca="tls/ca.pem")
        self.edit_policy(change)
        return ca, cert, key

    # -- agents ------------------------------------------------------------------------------

    def add_agent(self, name: str, *, description: str = "", calls: list[str] | None = None,
                  days: float = DEFAULT_CREDENTIAL_DAYS, renew: bool = False,
                  a2a: dict[str, Any] | None = None) -> Path:
        """Enrol an agent: key pair, hub-signed credential file, and a policy entry with no
        grants (default deny) unless `calls` are given."""
        if not valid_agent_name(name):
            raise ConfigError(f"{name!r} is not a valid agent name: use lower-case letters, "
                              "digits, _ and -, starting with a letter (at most 63)")
        if name in RESERVED_NAMES:
            raise ConfigError(f"{name!r} is reserved (the hub's own name in envelopes and at "
                              "/a2a/hub); choose another name")
        policy = self.load_policy()
        path = self.credential_path(name)
        if path.exists() and not renew:
            raise ConfigError(f"agent {name!r} is already enrolled ({path}); "
                              "use --renew to issue it a new key and credential")
        old = CredentialFile.load(path).credential.id if path.exists() else None
        hub = self.hub_key()
        private, private_b64 = new_agent_key()
        credential = hub.issue(name, private.public_key(), days=days)
        CredentialFile(credential=credential, private_key=private_b64,
                       hub_url=self.hub_url(policy), hub_public_key=hub.public_b64).save(path)
        remote = RemoteA2A.model_validate(a2a).model_dump(exclude_defaults=True) \
            if a2a is not None else None

        def enrol(entry: CommentedMap) -> None:
            if description:
                entry["description"] = description
            if calls:
                _merge_list(entry, "calls", calls)
            if remote is not None:
                entry["a2a"] = remote
        self.edit_agent(name, enrol, create=True)
        if old is not None:  # renewed: the old key no longer speaks for the agent
            self.revoke([old])
        return path

    def revoke(self, ids: Iterable[str]) -> list[str]:
        """Add ids (credentials, bearer tokens, delegations) to `revoked:`; returns the new."""
        added: list[str] = []

        def change(doc: CommentedMap) -> None:
            revoked = doc.get("revoked")
            if not isinstance(revoked, list):
                revoked = doc["revoked"] = CommentedSeq()
            for item in ids:
                if item not in revoked:
                    revoked.append(item)
                    added.append(item)
        self.edit_policy(change)
        return added

    def remove_agent(self, name: str) -> str | None:
        """Take an agent off the mesh: its entry goes, its credential is revoked and its
        credential file deleted. Returns the revoked credential id."""
        path = self.credential_path(name)
        cred = CredentialFile.load(path).credential.id if path.exists() else None

        def change(doc: CommentedMap) -> None:
            agents = doc.get("agents")
            if not isinstance(agents, dict) or name not in agents:
                raise ConfigError(f"agent {name!r} is not enrolled")
            del agents[name]
            if cred is not None:
                revoked = doc.get("revoked")
                if not isinstance(revoked, list):
                    revoked = doc["revoked"] = CommentedSeq()
                if cred not in revoked:
                    revoked.append(cred)
        self.edit_policy(change)
        path.unlink(missing_ok=True)
        return cred

    def take_back(self, name: str, *, calls: Iterable[str] = (), publish: Iterable[str] = (),
                  subscribe: Iterable[str] = (), memory: Iterable[str] = ()) -> list[str]:
        """Remove grants (exactly as written in mesh.yaml); returns what was not there."""
        missing: list[str] = []

        def change(entry: CommentedMap) -> None:
            for key, given in (("calls", calls), ("publish", publish),
                               ("subscribe", subscribe)):
                current = entry.get(key) if isinstance(entry.get(key), list) else []
                for value in given:
                    if value in current:
                        current.remove(value)
                    else:
                        missing.append(f"{key}: {value}")
                if key in entry and not current:
                    del entry[key]
            spaces = entry.get("memory") if isinstance(entry.get("memory"), dict) else {}
            for namespace in memory:
                if namespace in spaces:
                    del spaces[namespace]
                else:
                    missing.append(f"memory: {namespace}")
            if "memory" in entry and not spaces:
                del entry["memory"]
        self.edit_agent(name, change)
        return missing

    def set_agent(self, name: str, **settings: Any) -> None:
        """Set an agent's fields (clearance, label, rate, taint_scope, description) and add to
        its lists (sensitive, needs_approval, approve, endorse, declassify); None: unchanged."""
        def change(entry: CommentedMap) -> None:
            for key, value in settings.items():
                if value is None or value == []:
                    continue
                if isinstance(value, list):
                    _merge_list(entry, key, value)
                else:
                    entry[key] = value
        self.edit_agent(name, change)

    def set_suspended(self, name: str, suspended: bool) -> None:
        """Suspend (quarantine) an agent or restore it; the running hub picks it up at once."""
        def change(entry: CommentedMap) -> None:
            if suspended:
                entry["suspended"] = True
            else:
                entry.pop("suspended", None)
        self.edit_agent(name, change)

    def grant_calls(self, name: str, patterns: list[str]) -> None:
        self.grant(name, calls=patterns)

    def grant(self, name: str, *, calls: Iterable[str] = (), publish: Iterable[str] = (),
              subscribe: Iterable[str] = (), memory: dict[str, str] | None = None) -> None:
        """Add grants to an enrolled agent (validated; the running hub picks them up)."""
        def change(entry: CommentedMap) -> None:
            for key, given in (("calls", calls), ("publish", publish),
                               ("subscribe", subscribe)):
                if given:
                    _merge_list(entry, key, given)
            for namespace, access in (memory or {}).items():
                spaces = entry.get("memory")
                if not isinstance(spaces, dict):
                    spaces = entry["memory"] = CommentedMap()
                if spaces.get(namespace) != "read-write":
                    spaces[namespace] = access
        self.edit_agent(name, change)

    # -- editing mesh.yaml in place ----------------------------------------------------------

    def edit_agent(self, name: str, change: Callable[[CommentedMap], None], *,
                   create: bool = False) -> None:
        """Change one agent's entry in mesh.yaml in place: the user's comments, order and
        layout are kept, only what changes is written, and an edit that would make the policy
        invalid is refused (ConfigError) without touching the file."""
        def edit(doc: CommentedMap) -> None:
            agents = doc.get("agents")
            if not isinstance(agents, dict):
                agents = doc["agents"] = CommentedMap()
            if name not in agents:
                if not create:
                    raise ConfigError(f"agent {name!r} is not enrolled: "
                                      f"`interlink agent add {name}`")
                agents[name] = CommentedMap()
            elif not isinstance(agents[name], dict):
                agents[name] = CommentedMap()
            change(agents[name])
        self.edit_policy(edit)

    def edit_policy(self, change: Callable[[CommentedMap], None]) -> None:
        """Round-trip edit of mesh.yaml (ruamel.yaml keeps comments and order)."""
        self.require()
        rt = YAML()
        rt.preserve_quotes = True
        rt.width = 100
        doc = rt.load(self.policy_path.read_text()) or CommentedMap()
        change(doc)
        out = io.StringIO()
        rt.dump(doc, out)
        text = out.getvalue()
        parse_policy(text, str(self.policy_path))  # ConfigError, and the file stays as it was
        tmp = self.policy_path.with_suffix(".yaml.tmp")
        tmp.write_text(text)
        os.replace(tmp, self.policy_path)


def _merge_list(entry: CommentedMap, key: str, values: Iterable[str]) -> None:
    """Add `values` to the list `entry[key]` (kept as the user wrote it, new ones appended)."""
    current = entry.get(key)
    if not isinstance(current, list):
        current = entry[key] = CommentedSeq()
    for value in values:
        if value not in current:
            current.append(value)
