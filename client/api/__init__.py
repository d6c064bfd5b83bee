"""HTTP routes of the recognition client, one APIRouter per module. Routes only translate HTTP
to calls on the bundle manager (client/manager.py) and the recognition steps
(client/recognize.py), taking what they need through the `Annotated` aliases of
`client.api.deps`; `client.app.create_app` mounts each router with one `include_router` line."""
