#!/usr/bin/env python3
"""A consumer of the reservation events stream, built only from the published contract.

It knows what docs/events.md and schemas/ say, nothing of the Rust code: it reads every shard of
the Kinesis stream from the trim horizon, parents before children (so a reservation's order
survives resharding), validates each record against the JSON Schema, applies each reservation's
versions once and in order, and prints a summary as JSON:

    {"records": ..., "applied": ..., "duplicates": ..., "gaps": ..., "invalid": [...],
     "reservations": {"<reservation_id>": {"guest_id": ..., "status": ..., "version": ...}}}

Usage: consumer.py --stream reservation-events [--schema PATH]
Endpoints, region and credentials come from boto3's usual configuration (AWS_ENDPOINT_URL_KINESIS,
AWS_PROFILE, ...), the region also from AWS_REGION. Exit status 0 when every record was valid and nothing was left waiting on a
gap, 1 otherwise, 2 when the stream cannot be read.
"""

import argparse
import json
import os
import pathlib
import sys
import time

import boto3
import jsonschema

DEFAULT_SCHEMA = pathlib.Path(__file__).resolve().parents[2] / "schemas/events/v1/reservation-events.schema.json"


def shards_in_lineage_order(kinesis, stream):
    """Every shard, each after its parents (a parent no longer listed has expired: no wait)."""
    shards, token = [], None
    while True:
        page = kinesis.list_shards(NextToken=token) if token else kinesis.list_shards(StreamName=stream)
        shards += page["Shards"]
        token = page.get("NextToken")
        if not token:
            break
    listed = {s["ShardId"] for s in shards}
    done, ordered = set(), []
    while len(ordered) < len(shards):
        ready = [
            s for s in shards
            if s["ShardId"] not in done
            and all(p in done or p not in listed
                    for p in (s.get("ParentShardId"), s.get("AdjacentParentShardId")) if p)
        ]
        if not ready:
            raise RuntimeError("shard lineage has a cycle")
        for shard in ready:
            done.add(shard["ShardId"])
            ordered.append(shard)
    return ordered


def records_of(kinesis, stream, shard_id):
    """A shard's records from the trim horizon to its end (closed) or to the tip (open)."""
    iterator = kinesis.get_shard_iterator(
        StreamName=stream, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    while iterator:
        page = kinesis.get_records(ShardIterator=iterator, Limit=1000)
        yield from page["Records"]
        iterator = page.get("NextShardIterator")
        if not page["Records"] and page.get("MillisBehindLatest", 0) == 0:
            return  # at the tip of an open shard
        if not page["Records"]:
            time.sleep(0.05)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stream", default="reservation-events")
    parser.add_argument("--schema", type=pathlib.Path, default=DEFAULT_SCHEMA)
    args = parser.parse_args()

    schema = json.loads(args.schema.read_text())
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    summary = {"records": 0, "applied": 0, "duplicates": 0, "gaps": 0, "invalid": []}
    reservations = {}
    try:
        # AWS_REGION as the other AWS SDKs read it; boto3 itself reads only AWS_DEFAULT_REGION.
        kinesis = boto3.client("kinesis", region_name=os.environ.get("AWS_REGION") or None)
        shards = shards_in_lineage_order(kinesis, args.stream)
        for shard in shards:
            for record in records_of(kinesis, args.stream, shard["ShardId"]):
                summary["records"] += 1
                try:
                    event = json.loads(record["Data"])
                    validator.validate(event)
                except (ValueError, jsonschema.ValidationError) as error:
                    where = "/".join(str(p) for p in getattr(error, "absolute_path", [])) or "(the record)"
                    reason = getattr(error, "message", str(error))
                    summary["invalid"].append(f"{record['SequenceNumber']}: {where}: {reason}")
                    continue
                # The contract: the partition key is the reservation id; dedupe by (id, version),
                # apply version v only after v-1.
                reservation_id, version = event["aggregate_id"], event["version"]
                applied = reservations.get(reservation_id, {}).get("version", 0)
                if version <= applied:
                    summary["duplicates"] += 1
                elif version == applied + 1:
                    payload = event["payload"]
                    reservations[reservation_id] = {
                        "guest_id": payload["guest_id"], "status": payload["status"], "version": version}
                    summary["applied"] += 1
                else:
                    summary["gaps"] += 1
    except Exception as error:  # noqa: BLE001 - one readable line, then exit 2
        print(f"error: cannot read stream {args.stream}: {error}", file=sys.stderr)
        return 2
    summary["shards"] = len(shards)
    summary["reservations"] = reservations
    print(json.dumps(summary, sort_keys=True))
    return 0 if not summary["invalid"] and not summary["gaps"] else 1


if __name__ == "__main__":
    sys.exit(main())
