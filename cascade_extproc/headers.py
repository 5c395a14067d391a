"""Names shared by the Envoy bootstrap and the servicer: the contract between the two."""

PATH_HEADER = "x-cascade-path"  # response header: the path a request took
ROUTE_HEADER = "x-cascade-route"  # internal request header that selects a draft route
METADATA_NAMESPACE = "cascade"  # dynamic metadata namespace Envoy accepts from the servicer
