"""The issuer policy: TOML, deny by default, every error explained by line.

    [issuer]    name, url, max_skew, hop_refs, max_request_bytes
    [defaults]  ttl, uses, batch, rate, burst
    [nodes]     NAME = "base64url Ed25519 public key" | { key_file = "path" }
    [groups.G]  ttl, uses, batch, rate, burst, devices = [ids], [[groups.G.allow]] rules
    [devices.D] group, ttl, uses, batch, rate, burst, [[devices.D.allow]] rules
    rule:       resource | resources, operations, ttl, uses, chain, attenuators, audience, pop, pop_node

A device gets a token only when one of its rules (its own first, then its
group's, in file order) covers the requested resource and every requested
operation. docs/issuer.md has the full reference and an example.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import CrumbError
from ..keys import KeyFileError, PublicKey, load_public_key, unb64u
from ..scope import check_canonical, check_operation
from ..wire import MAX_BATCH, MAX_STRING, MAX_USES, POP_MODES
from .protocol import check_device_id, method_names
from .tomllines import Locator, dotted

MAX_TTL = 86_400

DEFAULTS = {"ttl": 60, "uses": 1, "batch": 4, "rate": 5.0, "burst": 10}
ISSUER_DEFAULTS = {"name": None, "url": "http://127.0.0.1:8080", "max_skew": 60, "hop_refs": "kid",
                   "max_request_bytes": 2048}


class PolicyError(ValueError):
    """A policy that cannot be used. ``problems`` are (line or None, path, message)."""

    def __init__(self, source: str, problems: list[tuple[int | None, str, str]]) -> None:
        self.source = source
        self.problems = problems
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        out = []
        for line, path, message in self.problems:
            where = f"{self.source}:{line}" if line else self.source
            out.append(f"{where}: {path}: {message}" if path else f"{where}: {message}")
        return out


@dataclass(frozen=True)
class Rule:
    pattern: str
    operations: frozenset
    ttl: int
    uses: int
    chain: tuple = ()          # ((name, PublicKey), ...)
    attenuators: tuple = ()
    audience: str | None = None
    where: str = ""            # e.g. "groups.sensors.allow[0]", for messages and the audit log
    pop: str | None = None     # proof of possession: "token" (a key per token) or "batch" (one per response)
    pop_node: tuple | None = None  # (name, PublicKey): the first hop, whose X25519 key cnf is encrypted to

    def covers(self, resource: str) -> bool:
        if self.pattern[-1] == "*":
            asked = resource[:-1] if resource[-1] == "*" else resource
            return asked.startswith(self.pattern[:-1])
        return resource == self.pattern

    def permits(self, ops: list[str]) -> bool:
        return all(op in self.operations for op in ops)


@dataclass(frozen=True)
class Profile:
    """What one device may do: its rules (in match order) and its limits."""

    device: str
    group: str | None
    rules: tuple
    batch: int
    rate: float
    burst: int

    def match(self, resource: str, permission: object, audience: str | None = None) -> Rule | None:
        """The first rule covering the resource and every operation (and the audience, if asked)."""
        if isinstance(permission, str):
            ops = [permission]
        elif isinstance(permission, int):
            ops = method_names(permission)
        else:
            ops = list(permission)  # type: ignore[arg-type]
        for rule in self.rules:
            if rule.covers(resource) and rule.permits(ops) and (
                    audience is None or rule.audience is None or rule.audience == audience):
                return rule
        return None


@dataclass
class _Table:
    settings: dict
    rules: list
    group: str | None = None


@dataclass
class Policy:
    source: str = "<embedded default: deny everything>"
    name: str | None = None
    url: str = ISSUER_DEFAULTS["url"]
    max_skew: int = ISSUER_DEFAULTS["max_skew"]
    hop_refs: str = ISSUER_DEFAULTS["hop_refs"]
    max_request_bytes: int = ISSUER_DEFAULTS["max_request_bytes"]
    defaults: dict = field(default_factory=lambda: dict(DEFAULTS))
    nodes: dict = field(default_factory=dict)          # name -> PublicKey
    groups: dict = field(default_factory=dict)         # name -> _Table
    devices: dict = field(default_factory=dict)        # id -> _Table
    members: dict = field(default_factory=dict)        # id -> group (from groups.G.devices)

    def knows(self, device: str) -> bool:
        return device in self.devices or device in self.members

    def group_of(self, device: str, enrolled_group: str | None) -> str | None:
        own = self.devices.get(device)
        if own is not None and own.group is not None:
            return own.group
        return self.members.get(device, enrolled_group)

    def profile(self, device: str, enrolled_group: str | None = None) -> Profile:
        group = self.group_of(device, enrolled_group)
        own = self.devices.get(device)
        gtable = self.groups.get(group) if group is not None else None
        rules = tuple((own.rules if own else []) + (gtable.rules if gtable else []))

        def limit(name: str) -> Any:
            for table in (own, gtable):
                if table is not None and name in table.settings:
                    return table.settings[name]
            return self.defaults[name]

        return Profile(device, group, rules, limit("batch"), float(limit("rate")), limit("burst"))

    @property
    def rule_count(self) -> int:
        return sum(len(t.rules) for t in self.groups.values()) + sum(len(t.rules) for t in self.devices.values())


# -- loading --------------------------------------------------------------------------


def load(path: str | Path) -> Policy:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise PolicyError(str(path), [(None, "", f"cannot read the policy: {e.strerror}")]) from None
    except UnicodeDecodeError:
        raise PolicyError(str(path), [(None, "", "the policy is not UTF-8 text")]) from None
    return parse(text, str(path), base_dir=path.parent)


def parse(text: str, source: str = "<policy>", base_dir: Path | None = None) -> Policy:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        # tomllib's message ends "(at line L, column C)"; keep it whole.
        found = re.search(r"at line (\d+)", str(e))
        line = int(found.group(1)) if found else None
        raise PolicyError(source, [(line, "", f"TOML syntax: {e}")]) from None
    checker = _Checker(source, Locator(text), base_dir or Path("."))
    policy = checker.policy(doc)
    if checker.problems:
        raise PolicyError(source, sorted(checker.problems, key=lambda p: (p[0] or 0)))
    return policy


_TOP = {"issuer", "defaults", "nodes", "groups", "devices"}
_LIMITS = {"batch", "rate", "burst"}
_RULE_DEFAULTS = {"ttl", "uses"}
_RULE_KEYS = {"resource", "resources", "operations", "ttl", "uses", "chain", "attenuators", "audience", "pop",
              "pop_node"}


class _Checker:
    def __init__(self, source: str, locator: Locator, base_dir: Path) -> None:
        self.source = source
        self.locator = locator
        self.base_dir = base_dir
        self.problems: list[tuple[int | None, str, str]] = []

    def bad(self, path: tuple, message: str) -> None:
        self.problems.append((self.locator.line_of(path), dotted(path), message))

    def table(self, value: object, path: tuple, allowed: set[str]) -> dict:
        if not isinstance(value, dict):
            self.bad(path, "must be a table")
            return {}
        for key in value:
            if key not in allowed:
                self.bad(path + (key,), f"unknown setting (expected one of: {', '.join(sorted(allowed))})")
        return value

    def int_in(self, table: dict, key: str, path: tuple, lo: int, hi: int) -> int | None:
        value = table[key]
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            self.bad(path + (key,), f"must be an integer from {lo} to {hi}")
            return None
        return value

    def settings(self, table: dict, path: tuple, names: set[str]) -> dict:
        out: dict = {}
        for key in names & table.keys():
            if key == "ttl":
                out[key] = self.int_in(table, key, path, 1, MAX_TTL)
            elif key == "uses":
                out[key] = self.int_in(table, key, path, 1, MAX_USES)
            elif key == "batch":
                out[key] = self.int_in(table, key, path, 1, MAX_BATCH)
            elif key == "burst":
                out[key] = self.int_in(table, key, path, 1, 1_000_000)
            elif key == "rate":
                value = table[key]
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1_000_000:
                    self.bad(path + (key,), "must be a number of tokens per second, above 0")
                    out[key] = None
                else:
                    out[key] = float(value)
        return {k: v for k, v in out.items() if v is not None}

    def policy(self, doc: dict) -> Policy:
        policy = Policy(source=self.source)
        for key in doc:
            if key not in _TOP:
                self.bad((key,), f"unknown section (expected one of: {', '.join(sorted(_TOP))})")
        issuer = self.table(doc.get("issuer", {}), ("issuer",), set(ISSUER_DEFAULTS))
        self.issuer(issuer, policy)
        defaults = self.table(doc.get("defaults", {}), ("defaults",), set(DEFAULTS))
        policy.defaults.update(self.settings(defaults, ("defaults",), set(DEFAULTS)))
        self.check_burst(policy.defaults, ("defaults",))
        raw_nodes = doc.get("nodes", {})
        nodes = self.table(raw_nodes, ("nodes",), set(raw_nodes) if isinstance(raw_nodes, dict) else set())
        for name, value in nodes.items():
            key = self.node_key(value, ("nodes", name))
            if key is not None:
                policy.nodes[name] = key
        groups = doc.get("groups", {})
        if not isinstance(groups, dict):
            self.bad(("groups",), "must be a table of groups")
            groups = {}
        for name, value in groups.items():
            path = ("groups", name)
            table = self.table(value, path, _LIMITS | _RULE_DEFAULTS | {"devices", "allow"})
            entry = _Table(self.settings(table, path, _LIMITS | _RULE_DEFAULTS), [])
            entry.rules = self.rules(table.get("allow", []), path + ("allow",), policy, entry.settings)
            self.check_burst({**policy.defaults, **entry.settings}, path)
            for i, device in enumerate(self.device_list(table.get("devices", []), path + ("devices",))):
                if device in policy.members and policy.members[device] != name:
                    self.bad(path + ("devices",), f"device {device!r} is already a member of group "
                                                  f"{policy.members[device]!r}")
                policy.members[device] = name
            policy.groups[name] = entry
        devices = doc.get("devices", {})
        if not isinstance(devices, dict):
            self.bad(("devices",), "must be a table of devices")
            devices = {}
        for device, value in devices.items():
            path = ("devices", device)
            try:
                check_device_id(device)
            except ValueError as e:
                self.bad(path, str(e))
            table = self.table(value, path, _LIMITS | _RULE_DEFAULTS | {"group", "allow"})
            entry = _Table(self.settings(table, path, _LIMITS | _RULE_DEFAULTS), [])
            group = table.get("group")
            if group is not None:
                if not isinstance(group, str) or group not in groups:
                    self.bad(path + ("group",), f"group {group!r} is not defined under [groups]")
                else:
                    entry.group = group
            entry.rules = self.rules(table.get("allow", []), path + ("allow",), policy, entry.settings)
            self.check_burst({**policy.defaults, **entry.settings}, path)
            policy.devices[device] = entry
        return policy

    def issuer(self, table: dict, policy: Policy) -> None:
        path = ("issuer",)
        if "name" in table:
            if not isinstance(table["name"], str) or not 0 < len(table["name"].encode()) <= MAX_STRING:
                self.bad(path + ("name",), "must be non-empty text (the iss claim of every token)")
            else:
                policy.name = table["name"]
        if "url" in table:
            if not isinstance(table["url"], str) or not table["url"].startswith(("http://", "https://")):
                self.bad(path + ("url",), "must be an http:// or https:// URL (what devices are told to call)")
            else:
                policy.url = table["url"].rstrip("/")
        if "max_skew" in table:
            value = self.int_in(table, "max_skew", path, 1, 3600)
            if value is not None:
                policy.max_skew = value
        if "hop_refs" in table:
            if table["hop_refs"] not in ("key", "kid"):
                self.bad(path + ("hop_refs",), "must be \"key\" (tokens carry node keys) or \"kid\" (4-byte ids)")
            else:
                policy.hop_refs = table["hop_refs"]
        if "max_request_bytes" in table:
            value = self.int_in(table, "max_request_bytes", path, 256, 65536)
            if value is not None:
                policy.max_request_bytes = value

    def check_burst(self, limits: dict, path: tuple) -> None:
        # A batch larger than the bucket could never be served: say so now.
        if limits.get("burst", 1) < limits.get("batch", 1):
            self.bad(path + ("burst",), f"burst ({limits['burst']}) must be at least batch ({limits['batch']}), "
                                        "or a full batch could never be issued")

    def node_key(self, value: object, path: tuple) -> PublicKey | None:
        if isinstance(value, dict):
            value = self.table(value, path, {"key", "key_file"})
            if len(value) != 1:
                self.bad(path, "give exactly one of key = \"base64url\" or key_file = \"path\"")
                return None
            if "key_file" in value:
                if not isinstance(value["key_file"], str):
                    self.bad(path + ("key_file",), "must be a path")
                    return None
                try:
                    return load_public_key(self.base_dir / value["key_file"])
                except KeyFileError as e:
                    self.bad(path + ("key_file",), str(e))
                    return None
            value = value["key"]
            path = path + ("key",)
        if not isinstance(value, str):
            self.bad(path, "must be a base64url Ed25519 public key or { key_file = \"path\" }")
            return None
        try:
            return PublicKey(unb64u(value))
        except ValueError:
            self.bad(path, "is not a 32-byte Ed25519 public key in base64url (no padding)")
            return None

    def device_list(self, value: object, path: tuple) -> list[str]:
        if not isinstance(value, list):
            self.bad(path, "must be a list of device ids")
            return []
        out = []
        for device in value:
            try:
                out.append(check_device_id(device))
            except ValueError as e:
                self.bad(path, f"{device!r}: {e}")
        return out

    def names(self, rule: dict, key: str, path: tuple, policy: Policy) -> tuple:
        value = rule.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.bad(path + (key,), "must be a list of node names (defined under [nodes])")
            return ()
        if len(set(value)) != len(value):
            self.bad(path + (key,), "names a node twice")
        out = []
        for name in value:
            if name not in policy.nodes:
                self.bad(path + (key,), f"node {name!r} is not defined under [nodes]")
            else:
                out.append((name, policy.nodes[name]))
        return tuple(out)

    def pop(self, rule: dict, path: tuple, policy: Policy, chain: tuple) -> tuple[str | None, tuple | None]:
        """(mode, first hop) of a rule's proof of possession (docs/issuer.md, PROTOCOL.md §4.4).

        ``pop = true`` is ``"batch"`` (the cheaper at the first hop: PROTOCOL.md §4.4). The key is encrypted to ``pop_node`` if
        given, else to the chain's first hop: the first service to verify the token.
        """
        value = rule.get("pop", False)
        node = rule.get("pop_node")
        if value is False:
            if node is not None:
                self.bad(path + ("pop_node",), "is only meaningful with pop = \"token\" or \"batch\"")
            return None, None
        mode = "batch" if value is True else value
        if mode not in POP_MODES:
            self.bad(path + ("pop",), "must be true, \"token\" (a PoP key per token) or \"batch\" "
                                      "(one per token response)")
            return None, None
        if node is not None:
            if not isinstance(node, str) or node not in policy.nodes:
                self.bad(path + ("pop_node",), f"node {node!r} is not defined under [nodes]")
                return None, None
            if chain and chain[0][0] != node:
                self.bad(path + ("pop_node",), f"the first hop of this rule's chain is {chain[0][0]!r}: it is the "
                                               "one that verifies first, so the PoP key is encrypted to it")
                return None, None
            return mode, (node, policy.nodes[node])
        if not chain:
            self.bad(path + ("pop",), "needs the first verifying hop: pop_node = \"NAME\" (under [nodes]) "
                                      "or a chain")
            return None, None
        return mode, chain[0]

    def rules(self, value: object, path: tuple, policy: Policy, inherited: dict) -> list[Rule]:
        if not isinstance(value, list):
            self.bad(path, "must be an array of rule tables ([[...allow]])")
            return []
        out = []
        for i, raw in enumerate(value):
            rpath = path + (i,)
            rule = self.table(raw, rpath, _RULE_KEYS)
            if not rule:
                continue
            if ("resource" in rule) == ("resources" in rule):
                self.bad(rpath, "give exactly one of resource = \"...\" or resources = [...]")
                continue
            resources = [rule["resource"]] if "resource" in rule else rule["resources"]
            key = "resource" if "resource" in rule else "resources"
            if not isinstance(resources, list) or not resources:
                self.bad(rpath + (key,), "must be a non-empty list of resource patterns")
                continue
            good = True
            for res in resources:
                try:
                    check_canonical(res)  # a rule names what the issuer may grant: canonical resources only
                except CrumbError as e:
                    self.bad(rpath + (key,), e.message)
                    good = False
            ops = rule.get("operations")
            if not isinstance(ops, list) or not ops:
                self.bad(rpath + ("operations",), "must be a non-empty list of operation names")
                good = False
            else:
                for op in ops:
                    try:
                        check_operation(op)
                    except CrumbError as e:
                        self.bad(rpath + ("operations",), e.message)
                        good = False
            settings = {**policy.defaults, **inherited, **self.settings(rule, rpath, _RULE_DEFAULTS)}
            audience = rule.get("audience")
            if audience is not None and (not isinstance(audience, str) or not 0 < len(audience.encode()) <= MAX_STRING):
                self.bad(rpath + ("audience",), "must be non-empty text")
                good = False
            chain = self.names(rule, "chain", rpath, policy)
            attenuators = self.names(rule, "attenuators", rpath, policy)
            pop, pop_node = self.pop(rule, rpath, policy, chain)
            if not good:
                continue
            for res in resources:
                out.append(Rule(res, frozenset(ops), settings["ttl"], settings["uses"], chain, attenuators,
                                audience, dotted(rpath), pop, pop_node))
        return out
