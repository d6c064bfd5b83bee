"""The client's serving path: one pipeline from a request's bytes to its answer, a module per
stage (client/serving/pipeline.py draws it):

    admit.py     Admission: bodies read at once, then places in line (503 + Retry-After)
    read.py      read_body, read_uploads: the whole body under size, deadline, minimum rate
    decode.py    open_uploads (headers, pixel budgets), decode_images, decode_timed
    batch.py     Batcher, predict_each: concurrent requests' images in one network call
    run.py       Runner and its two kinds: InProcess (inline or a worker thread, by measured
                 cost) and InChildren (inference processes, children.py)
    answer.py    recognition_body: /recognize's JSON
    pipeline.py  Pipeline (the stages in order), make_pipeline (from the settings)

This `__init__` imports none of them: client/oip_model.py uses the decode stage and the run
stage uses oip_model, so importing the package must not import the run stage.
"""

__all__: list[str] = []
