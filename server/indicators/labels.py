"""Vietnamese and English labels of the indicators (DOMAIN.md §2 terms)."""

LABELS = {
    "anc4": ("Tỷ lệ phụ nữ 15–49 tuổi sinh sống được khám thai ≥ 4 lần",
             "ANC4+ coverage (women 15–49 with a live birth)"),
    "anc4_vn": ("Khám thai ≥ 4 lần trong 3 thời kỳ", "ANC4+ in all three trimesters (VN)"),
    "facility_delivery": ("Tỷ lệ sinh tại cơ sở y tế", "Facility delivery rate"),
    "skilled_attendance": ("Tỷ lệ sinh có cán bộ y tế có kỹ năng đỡ",
                           "Skilled birth attendance"),
    "pregnancy_related_deaths": ("Số ca tử vong liên quan đến thai sản",
                                 "Pregnancy-related deaths"),
    "pnc_48h": ("Bà mẹ được khám sau sinh trong 2 ngày", "Postnatal check within 2 days"),
    "home_visit_tt30": ("Chăm sóc sau sinh tại nhà đúng TT 30/2024",
                        "Home visit compliance (TT 30/2024)"),
    "pnc_42d": ("Tỷ lệ sản phụ được khám sau sinh trong 42 ngày",
                "Postnatal check within 42 days"),
    "exclusive_bf": ("Trẻ dưới 6 tháng bú mẹ hoàn toàn", "Exclusive breastfeeding under 6 months"),
    "underweight": ("Suy dinh dưỡng nhẹ cân (dưới 5 tuổi)", "Underweight (under 5)"),
    "stunting": ("Suy dinh dưỡng thấp còi (dưới 5 tuổi)", "Stunting (under 5)"),
    "wasting": ("Suy dinh dưỡng gầy còm (dưới 5 tuổi)", "Wasting (under 5)"),
    "overweight": ("Thừa cân (dưới 5 tuổi)", "Overweight (under 5)"),
    "sam": ("Suy dinh dưỡng cấp tính nặng (6–59 tháng)", "Severe acute malnutrition (6–59 months)"),
    "mam": ("Suy dinh dưỡng cấp tính vừa (6–59 tháng)",
            "Moderate acute malnutrition (6–59 months)"),
    "counselling_u2": ("Trẻ dưới 2 tuổi có người chăm sóc được tư vấn dinh dưỡng",
                       "Nutrition counselling coverage under 2"),
    "hi_coverage": ("Tỷ lệ bao phủ bảo hiểm y tế", "Health insurance coverage"),
    "early_marriage": ("Số cặp tảo hôn", "Early marriage cases"),
    "consanguineous_marriage": ("Số cặp hôn nhân cận huyết thống",
                                "Consanguineous marriage cases"),
    "group_sessions": ("Số buổi sinh hoạt câu lạc bộ / nhóm", "Club and group sessions"),
}


def label(ident, lang):
    vi, en = LABELS[ident]
    return en if lang == "en" else vi


def pick_lang(arg, accept_language):
    """`lang=` first, then the Accept-Language header; Vietnamese by default."""
    if arg in ("vi", "en"):
        return arg
    for part in (accept_language or "").split(","):
        tag = part.split(";")[0].strip().lower()
        if tag.startswith("vi"):
            return "vi"
        if tag.startswith("en"):
            return "en"
    return "vi"
