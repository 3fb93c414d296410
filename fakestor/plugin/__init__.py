"""The Docker volume plugin: Docker's volume protocol over a Unix socket, backed by EBS.

It is an EBS client like any other (boto3 and instance metadata), so the same
code pointed at real AWS on a Nitro instance would work.
"""
