-- The batch as ingested, with the batch id attached and text values (ids aside) trimmed and
-- lower-cased, so that 'Fiber_Optic ' and 'fiber_optic' are one category downstream.
select
    '{{ var("batch_id") }}' as batch_id,
    {% for column in adapter.get_columns_in_relation(source('warehouse', 'raw_batch')) -%}
    {% if column.is_string() and column.name != var('id_column') -%}
    nullif(lower(trim({{ adapter.quote(column.name) }})), '') as {{ adapter.quote(column.name) }}
    {%- else -%}
    {{ adapter.quote(column.name) }}
    {%- endif %}{{ "," if not loop.last }}
    {% endfor %}
from {{ source('warehouse', 'raw_batch') }}
