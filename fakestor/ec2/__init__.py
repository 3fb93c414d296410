"""The EC2 Query API over HTTP: wire format from botocore's model, actions on the model."""
