"""CloudWatch's API for the AWS/EBS metrics, in the protocol botocore speaks to it."""
