-- The ingested batch with its batch id attached. Values arrive typed and checked against the
-- data contract, and are passed on unchanged: a registered model must see the same values at
-- serving time that the contract allows.
select
    '{{ var("batch_id") }}' as batch_id,
    *
from {{ source('warehouse', 'raw_batch') }}
