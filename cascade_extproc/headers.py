"""Names shared by the Envoy bootstrap and the servicer: the contract between the two."""

PATH_HEADER = "x-cascade-path"  # response header: the path a request took
ROUTE_HEADER = "x-cascade-route"  # internal request header that selects a draft route
METADATA_NAMESPACE = "cascade"  # dynamic metadata namespace Envoy accepts from the servicer
API_HEADER = "x-cascade-api"  # set by Envoy on transparently captured traffic: the host's API
INTERNAL_HEADERS = (ROUTE_HEADER, API_HEADER)  # stripped from clients before anything routes
