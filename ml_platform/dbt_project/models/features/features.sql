-- Model-ready features for one batch. For the demo churn data set this derives the usual
-- churn signals; any other data set passes through its staged columns unchanged, so a
-- user's own batches train without writing SQL first.
{% if var('dataset') == 'churn' %}
with cleaned as (
    select
        *,
        -- A missing total is a bill not yet totalled: estimate it from price and tenure.
        coalesce(total_charges, monthly_charges * greatest(tenure_months, 1)) as total_charges_filled
    from {{ ref('stg_batch') }}
)

select
    batch_id,
    customer_id,
    tenure_months,
    monthly_charges,
    total_charges_filled as total_charges,
    age,
    support_tickets,
    num_products,
    contract_type,
    coalesce(payment_method, 'unknown') as payment_method,
    internet_service,
    region,
    case
        when tenure_months < 6 then '00-05m'
        when tenure_months < 12 then '06-11m'
        when tenure_months < 24 then '12-23m'
        when tenure_months < 48 then '24-47m'
        else '48m+'
    end as tenure_bucket,
    cast(contract_type = 'month-to-month' as integer) as is_month_to_month,
    cast(internet_service = 'fiber_optic' as integer) as has_fiber,
    round(monthly_charges / num_products, 4) as charges_per_product,
    round(support_tickets / (greatest(tenure_months, 1) / 12.0), 4) as tickets_per_year,
    round(total_charges_filled / nullif(monthly_charges * greatest(tenure_months, 1), 0), 4) as billing_ratio,
    churned
from cleaned
{% else %}
select * from {{ ref('stg_batch') }}
{% endif %}
