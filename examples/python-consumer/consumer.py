#!/usr/bin/env python3
"""A consumer of the reservation events stream, built only from the published contract.

It knows what docs/events.md and schemas/ say, nothing of the Rust code: it reads every shard of
the Kinesis stream from the trim horizon, parents before children (so a reservation's order
survives resharding), or, with --kafka, every partition of the Kafka topic from the start in a
consumer group of its own, committing offsets only after it applied what comes before them. It
validates each record against the JSON Schema, applies each reservation's versions once and in
order, and prints a summary as JSON:

    {"records": ..., "applied": ..., "duplicates": ..., "gaps": ..., "invalid": [...],
     "reservations": {"<reservation_id>": {"guest_id": ..., "status": ..., "version": ...}}}

Usage: consumer.py --stream reservation-events [--schema PATH]
       consumer.py --kafka HOST:PORT --topic reservation-events --group GROUP [--idle-seconds 5]
Endpoints, region and credentials come from boto3's usual configuration (AWS_ENDPOINT_URL_KINESIS,
AWS_PROFILE, ...), the region also from AWS_REGION. The Kafka connection is plaintext, as on a
local broker; for MSK, add librdkafka's TLS and SASL settings to the Consumer's configuration.
Exit status 0 when every record was valid and nothing was left waiting on a gap, 1 otherwise, 2
when the stream or topic cannot be read.
"""

import argparse
import json
import os
import pathlib
import sys
import time

import boto3
import jsonschema
from confluent_kafka import Consumer, KafkaError

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


def kafka_records(bootstrap, topic, group, idle_seconds, join_seconds=60):
    """The topic's records in a consumer group of our own: each partition in offset order, from the
    start for a new group. Yields (position, key, value); after each one is handled the caller's
    loop comes back here, and its offset is committed only then. Stops after idle_seconds with
    nothing new once the group gave us partitions (a topic has no end)."""
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
        "enable.auto.commit": False, "fetch.wait.max.ms": 50,
        # A short session: the group forms (and a crashed reader is replaced) in seconds, where
        # the 45 s default costs tens of seconds; the heartbeat keeps a live reader well inside.
        "session.timeout.ms": 6000, "heartbeat.interval.ms": 1000,
    })
    assigned_at = []
    consumer.subscribe([topic], on_assign=lambda *_: assigned_at.append(time.monotonic()))
    try:
        started = last_record = time.monotonic()
        while True:
            now = time.monotonic()
            if not assigned_at:
                if now - started > join_seconds:
                    raise RuntimeError(f"the group {group} was given no partition in {join_seconds} s")
            elif now - max(last_record, assigned_at[-1]) >= idle_seconds:
                break
            message = consumer.poll(0.2)
            if message is None:
                continue
            if message.error():
                if message.error().code() == KafkaError._PARTITION_EOF:
                    continue
                raise RuntimeError(message.error().str())
            last_record = time.monotonic()
            yield f"{message.topic()}-{message.partition()}@{message.offset()}", message.key(), message.value()
            consumer.commit(message=message, asynchronous=False)
    finally:
        consumer.close()


def kinesis_records(stream):
    """Every record of the stream: each shard after its parents. Yields (position, key, data)."""
    # AWS_REGION as the other AWS SDKs read it; boto3 itself reads only AWS_DEFAULT_REGION.
    kinesis = boto3.client("kinesis", region_name=os.environ.get("AWS_REGION") or None)
    for shard in shards_in_lineage_order(kinesis, stream):
        for record in records_of(kinesis, stream, shard["ShardId"]):
            yield record["SequenceNumber"], record["PartitionKey"].encode(), record["Data"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stream", default="reservation-events")
    parser.add_argument("--schema", type=pathlib.Path, default=DEFAULT_SCHEMA)
    parser.add_argument("--kafka", metavar="HOST:PORT", help="read the Kafka topic on these brokers instead")
    parser.add_argument("--topic", default="reservation-events")
    parser.add_argument("--group", default="python-consumer")
    parser.add_argument("--idle-seconds", type=float, default=5.0)
    args = parser.parse_args()

    schema = json.loads(args.schema.read_text())
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    summary = {"records": 0, "applied": 0, "duplicates": 0, "gaps": 0, "invalid": []}
    reservations = {}
    if args.kafka:
        source, records = f"topic {args.topic} on {args.kafka}", kafka_records(
            args.kafka, args.topic, args.group, args.idle_seconds)
    else:
        source, records = f"stream {args.stream}", kinesis_records(args.stream)
    try:
        for position, key, data in records:
            summary["records"] += 1
            try:
                event = json.loads(data)
                validator.validate(event)
                if key != event["aggregate_id"].encode():
                    raise ValueError(f"key {key!r} is not the reservation id {event['aggregate_id']}")
            except (ValueError, jsonschema.ValidationError) as error:
                where = "/".join(str(p) for p in getattr(error, "absolute_path", [])) or "(the record)"
                reason = getattr(error, "message", str(error))
                summary["invalid"].append(f"{position}: {where}: {reason}")
                continue
            # The contract: the key is the reservation id; dedupe by (id, version), apply version v
            # only after v-1.
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
        print(f"error: cannot read {source}: {error}", file=sys.stderr)
        return 2
    if not args.kafka:
        summary["shards"] = len(shards_in_lineage_order(
            boto3.client("kinesis", region_name=os.environ.get("AWS_REGION") or None), args.stream))
    summary["reservations"] = reservations
    print(json.dumps(summary, sort_keys=True))
    return 0 if not summary["invalid"] and not summary["gaps"] else 1


if __name__ == "__main__":
    sys.exit(main())
