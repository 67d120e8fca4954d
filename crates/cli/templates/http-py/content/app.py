"""An HTTP component: greets with the `greeting` variable and counts visits
in the default key-value store."""

from spin_sdk import http, key_value, variables
from spin_sdk.http import Request, Response


class HttpHandler(http.Handler):
    async def handle_request(self, request: Request) -> Response:
        print(f"Handling request to {request.uri}")
        with await key_value.open_default() as store:
            previous = await store.get("visits")
            visits = int(previous.decode()) + 1 if previous else 1
            await store.set("visits", str(visits).encode())
        greeting = await variables.get("greeting")
        return Response(
            200,
            {"content-type": "text/plain"},
            bytes(f"{greeting} from Python (visit {visits})\n", "utf-8"),
        )
