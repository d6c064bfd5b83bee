"""HTTP routes of the recognition client, one APIRouter per module. Routes only translate HTTP
to calls on the bundle manager (client/manager.py) and the serving pipeline
(client/serving/pipeline.py), taking what they need through `client.api.deps`;
`client.app.create_app` mounts each router with one `include_router` line."""
