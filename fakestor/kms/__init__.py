"""KMS, as much of it as EBS clients use, in AWS's JSON protocol."""
