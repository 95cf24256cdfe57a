"""DynamoDB capacity units and KMS calls, counted on the client side of real calls.

Emulators do not report consumed capacity faithfully (moto answers ReturnConsumedCapacity with one
unit per call whatever it read), so the meter computes what DynamoDB would bill from DynamoDB's own
rules, for every call a boto3 client makes:

- item size: the sum of attribute name lengths and value sizes (strings as UTF-8, binary as is,
  numbers ~1 byte per two digits + 1);
- reads: 4 KB units, a strongly consistent read counting 1 and an eventually consistent one 0.5;
  a GetItem or each BatchGetItem key is rounded up on its own (and a missing item still costs the
  minimum); a Query is billed on the total size of the items it matched, before projection,
  rounded up once per page;
- writes: 1 KB units per item (the larger of old and new for updates and deletes), doubled inside
  TransactWriteItems.

Sizes of items the reader does not have in hand (a Query projects attributes away, a delete never
returns the item) are looked up with a separate, unmetered client.
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

READ_UNIT_BYTES = 4096
WRITE_UNIT_BYTES = 1024


def value_size(value: dict[str, Any]) -> int:
    (kind, raw), *_ = value.items()
    if kind == "S":
        return len(str(raw).encode("utf-8"))
    if kind == "B":
        return len(raw)
    if kind == "N":
        digits = len(str(Decimal(str(raw))).replace("-", "").replace(".", "").lstrip("0")) or 1
        return math.ceil(digits / 2) + 1
    if kind in {"BOOL", "NULL"}:
        return 1
    if kind in {"SS", "NS", "BS"}:
        return sum(value_size({kind[0]: member}) for member in raw)
    if kind == "L":
        return 3 + sum(1 + value_size(member) for member in raw)
    if kind == "M":
        return 3 + sum(1 + len(name.encode("utf-8")) + value_size(member) for name, member in raw.items())
    raise ValueError(f"unknown attribute type {kind}")


def item_size(item: dict[str, Any]) -> int:
    return sum(len(name.encode("utf-8")) + value_size(value) for name, value in item.items())


def _read_units(size: int, *, consistent: bool) -> float:
    units = max(1, math.ceil(size / READ_UNIT_BYTES))
    return units * (1.0 if consistent else 0.5)


def _write_units(size: int) -> int:
    return max(1, math.ceil(size / WRITE_UNIT_BYTES))


class CapacityMeter:
    """Attach to a DynamoDB client (and optionally a KMS client); read `totals` or use `measure()`."""

    def __init__(self, dynamodb: Any, *, lookup: Any, kms: Any = None) -> None:
        """`lookup`: an unmetered DynamoDB client on the same endpoint, for sizes of items not in hand."""
        self._lookup = lookup
        self._key_names: dict[str, tuple[str, str]] = {}
        self.sizes: dict[tuple[str, str, str], int] = {}  # (table, hash, range) -> bytes
        self.totals: Counter[str] = Counter()
        self.enabled = True  # off: the hooks return at once (for timing without the meter's own cost)
        self._lock = threading.Lock()
        self._local = threading.local()
        dynamodb.meta.events.register("before-parameter-build.dynamodb", self._before)
        dynamodb.meta.events.register("after-call.dynamodb", self._after)
        if kms is not None:
            kms.meta.events.register("before-call.kms", self._kms)

    @contextmanager
    def measure(self) -> Iterator[Counter[str]]:
        """Counts what happens inside the block (RCU, WCU, calls per operation, KMS calls)."""
        before = Counter(self.totals)
        delta: Counter[str] = Counter()
        try:
            yield delta
        finally:  # what a failed request used counts too
            for name, value in self.totals.items():
                if value != before.get(name, 0):
                    delta[name] = value - before.get(name, 0)

    def remember_item(self, table: str, item: dict[str, Any]) -> None:
        hash_name, range_name = self._keys(table)
        self.sizes[(table, item[hash_name]["S"], item[range_name]["S"])] = item_size(item)

    # -- hooks ---------------------------------------------------------------------------------------

    def _kms(self, model: Any, **_: Any) -> None:
        if not self.enabled:
            return
        with self._lock:
            self.totals[f"kms:{model.name}"] += 1
            self.totals["kms_calls"] += 1

    def _before(self, model: Any, params: dict[str, Any], **_: Any) -> None:
        # Sizes before the write (deletes and updates are billed on the larger of old and new).
        if not self.enabled:
            self._local.pending = None
            return
        pending: dict[str, Any] = {"params": dict(params)}
        if model.name == "TransactWriteItems":
            pending["old"] = [self._size_of_existing(write) for write in params["TransactItems"]]
        elif model.name in {"DeleteItem", "UpdateItem"}:
            pending["old"] = [self._size_of_existing({model.name: params})]
        self._local.pending = pending

    def _after(self, model: Any, parsed: dict[str, Any], **_: Any) -> None:
        pending = getattr(self._local, "pending", None)
        if not self.enabled or not pending:
            return
        params = pending.get("params", {})
        name = model.name
        read = write = 0.0
        if name == "GetItem":
            item = parsed.get("Item")
            size = self._full_size(params["TableName"], {**params["Key"], **item}) if item else 0
            read = _read_units(size, consistent=bool(params.get("ConsistentRead")))
        elif name == "BatchGetItem":
            for table, request in params["RequestItems"].items():
                found = {self._key_of(table, item): item for item in parsed.get("Responses", {}).get(table, [])}
                for key in request["Keys"]:
                    item = found.get(self._key_of(table, key))
                    size = self._full_size(table, item) if item else 0
                    read += _read_units(size, consistent=bool(request.get("ConsistentRead")))
        elif name in {"Query", "Scan"}:
            table = params["TableName"]
            hash_name, _ = self._keys(table)
            partition = params.get("ExpressionAttributeValues", {}).get(":owner")
            items = [item if hash_name in item else {hash_name: partition, **item} for item in parsed.get("Items", [])]
            size = sum(self._full_size(table, item) for item in items)
            read = _read_units(size, consistent=bool(params.get("ConsistentRead")))
        elif name == "PutItem":
            write = _write_units(item_size(params["Item"]))
            self.remember_item(params["TableName"], params["Item"])
        elif name == "BatchWriteItem":
            for table, requests in params["RequestItems"].items():
                for request in requests:
                    if "PutRequest" in request:
                        write += _write_units(item_size(request["PutRequest"]["Item"]))
                        self.remember_item(table, request["PutRequest"]["Item"])
        elif name in {"DeleteItem", "UpdateItem"}:
            write = _write_units(max(pending.get("old", [0])[0], 1))
        elif name == "TransactWriteItems":
            for write_request, old in zip(params["TransactItems"], pending.get("old", []), strict=False):
                new = 0
                if "Put" in write_request:
                    new = item_size(write_request["Put"]["Item"])
                    self.remember_item(write_request["Put"]["TableName"], write_request["Put"]["Item"])
                elif "Update" in write_request:
                    new = old + 16  # a counter grows by a few bytes at most
                write += 2 * _write_units(max(old, new, 1))
        with self._lock:
            self.totals[f"calls:{name}"] += 1
            self.totals["rcu"] += read
            self.totals["wcu"] += write

    # -- sizes ---------------------------------------------------------------------------------------

    def _keys(self, table: str) -> tuple[str, str]:
        if table not in self._key_names:
            schema = self._lookup.describe_table(TableName=table)["Table"]["KeySchema"]
            by_type = {key["KeyType"]: key["AttributeName"] for key in schema}
            self._key_names[table] = (by_type["HASH"], by_type.get("RANGE", ""))
        return self._key_names[table]

    def _key_of(self, table: str, item: dict[str, Any]) -> tuple[str, str, str]:
        hash_name, range_name = self._keys(table)
        range_value = next(iter(item[range_name].values())) if range_name else ""  # hash-only tables
        return (table, next(iter(item[hash_name].values())), range_value)

    def _full_size(self, table: str, item: dict[str, Any]) -> int:
        key = self._key_of(table, item)
        if key not in self.sizes:
            hash_name, range_name = self._keys(table)
            key_attributes = {name: item[name] for name in (hash_name, range_name) if name}
            found = self._lookup.get_item(TableName=table, Key=key_attributes, ConsistentRead=True).get("Item")
            self.sizes[key] = item_size(found) if found else item_size(item)
        return self.sizes[key]

    def _size_of_existing(self, write: dict[str, Any]) -> int:
        (kind, request), *_ = write.items()
        if kind == "Put":
            return 0
        table = request["TableName"]
        key = self._key_of(table, request["Key"])
        found = self._lookup.get_item(TableName=table, Key=request["Key"], ConsistentRead=True).get("Item")
        size = item_size(found) if found else 0
        if found is None:
            self.sizes.pop(key, None)
        return size
