"""P(like): like/click samples, the light like head, the cross-encoder, their fitting and the
product workflow (``metarec like fit``, ``p_like`` in the service).

Sits above ``meta`` in the layering: it may use data, text, models, training, adapt and meta;
none of those imports it.
"""
