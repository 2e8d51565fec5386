#!/usr/bin/env python3
"""One contact's whole life against a running smista, from the proto alone.

An operator desk logs in and watches its offers; the telephony platform offers a call; the desk
accepts it and completes it; the platform's CancelContact then answers the outcome again (it is
idempotent). Every step checks what the proto promises and the script exits non-zero otherwise.

    ./generate.sh && python3 contact_flow.py --target 127.0.0.1:50051

TLS and tokens (see the README's "Running it securely"): --ca ca.pem (and --cert/--key for
mutual TLS), --token-file for a bearer token sent with every call (a desk token must name the
operator it acts as; pass --desk-token-file for the desk's calls if it differs).
"""

import argparse
import os
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "gen"))

import grpc  # noqa: E402

from smista.v1 import common_pb2, contact_pb2, contact_pb2_grpc  # noqa: E402
from smista.v1 import operator_pb2, operator_pb2_grpc  # noqa: E402


def channel(args):
    if not args.ca:
        return grpc.insecure_channel(args.target)
    with open(args.ca, "rb") as f:
        roots = f.read()
    key = cert = None
    if args.cert and args.key:
        with open(args.key, "rb") as f:
            key = f.read()
        with open(args.cert, "rb") as f:
            cert = f.read()
    creds = grpc.ssl_channel_credentials(root_certificates=roots, private_key=key, certificate_chain=cert)
    return grpc.secure_channel(args.target, creds)


def metadata(token_file):
    if not token_file:
        return ()
    with open(token_file) as f:
        return (("authorization", "Bearer " + f.read().strip()),)


def check(what, cond, detail=""):
    if not cond:
        print(f"FAILED: {what} {detail}", file=sys.stderr)
        sys.exit(1)
    print(f"ok: {what}")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--target", default="127.0.0.1:50051")
    p.add_argument("--ca")
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--token-file")
    p.add_argument("--desk-token-file")
    p.add_argument("--operator", default="py-op-1")
    p.add_argument("--group", default="internal")
    p.add_argument("--queue", default="pensions")
    args = p.parse_args()

    ch = channel(args)
    grpc.channel_ready_future(ch).result(timeout=10)
    platform = metadata(args.token_file)
    desk = metadata(args.desk_token_file or args.token_file)
    contacts = contact_pb2_grpc.ContactServiceStub(ch)
    ops = operator_pb2_grpc.OperatorServiceStub(ch)
    op = args.operator
    call_id = f"py-call-{int(time.time() * 1000)}"

    r = ops.Login(
        operator_pb2.LoginRequest(
            operator_id=op,
            group=args.group,
            skills=[common_pb2.Skill(name=args.queue, level=7)],
            session_id=f"{op}-python",
        ),
        metadata=desk,
    )
    check("login serves the queue", args.queue in r.queues, str(list(r.queues)))

    # The desk's offer stream, read on a thread as a desktop would.
    offers = []
    got_offer = threading.Event()
    stream = ops.WatchOffers(operator_pb2.WatchOffersRequest(operator_id=op), metadata=desk)

    def read_offers():
        try:
            for o in stream:
                offers.append(o)
                got_offer.set()
        except grpc.RpcError:
            pass  # cancelled at the end

    reader = threading.Thread(target=read_offers, daemon=True)
    reader.start()

    d = contacts.OfferContact(
        contact_pb2.OfferContactRequest(contact_id=call_id, queue=args.queue, channel=common_pb2.CHANNEL_VOICE),
        metadata=platform,
    )
    check("the offer is assigned to our operator", d.WhichOneof("decision") == "assigned" and d.assigned.operator_id == op, str(d))
    # Offering the same id again is idempotent: the same decision, nothing routed twice.
    again = contacts.OfferContact(
        contact_pb2.OfferContactRequest(contact_id=call_id, queue=args.queue, channel=common_pb2.CHANNEL_VOICE),
        metadata=platform,
    )
    check("a retried offer answers the same decision", again.assigned.operator_id == op, str(again))

    check("the desk is pushed the offer", got_offer.wait(10) and offers[0].contact_id == call_id)
    ops.AcceptOffer(operator_pb2.AcceptOfferRequest(operator_id=op, contact_id=call_id), metadata=desk)
    print("ok: accepted")
    done = ops.CompleteContact(
        operator_pb2.CompleteContactRequest(operator_id=op, contact_id=call_id, wrap_up_ms=0), metadata=desk
    )
    print(f"ok: completed, handled in {done.handle_ms} ms")

    end = contacts.CancelContact(contact_pb2.CancelContactRequest(contact_id=call_id), metadata=platform)
    check("a late hang-up answers the final outcome", end.outcome == common_pb2.OUTCOME_COMPLETED, str(end))

    try:
        contacts.OfferContact(
            contact_pb2.OfferContactRequest(contact_id="py-bad", queue="no-such-queue", channel=common_pb2.CHANNEL_VOICE),
            metadata=platform,
        )
        check("an unknown queue is refused", False)
    except grpc.RpcError as e:
        check("an unknown queue is NOT_FOUND", e.code() == grpc.StatusCode.NOT_FOUND, str(e.code()))

    stream.cancel()
    ops.Logout(operator_pb2.LogoutRequest(operator_id=op, force=False), metadata=desk)
    print("ok: logged out")


if __name__ == "__main__":
    main()
