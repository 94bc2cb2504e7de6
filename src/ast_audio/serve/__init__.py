"""HTTP service and web page for ast-audio (`ast-audio serve`); needs the `serve` extra (fastapi, uvicorn).

limits.py (settings, body limits) -> forms.py (multipart uploads) -> app.py (the service and its routes) ->
server.py (start-up); fair.py shares the model between clients, guard.py checks Host/Origin, protocol.py times out
slow headers.
"""
