"""The EBS direct APIs (rest-json), served beside EC2 for requests signed for `ebs`."""
