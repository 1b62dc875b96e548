import json


def restore(blob: bytes) -> object:
    return json.loads(blob.decode("utf-8"))
