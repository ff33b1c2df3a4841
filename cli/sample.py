"""Deterministic sample tweets in the X API v2 filtered-stream shape, in many languages and scripts.

The bundled data/sample_tweets.jsonl is `write_sample(path, 3000, 2015)`; a test regenerates it and
compares bytes, so the file and this code cannot drift.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

# Snowflake-like ids: 19 digits, increasing with time, as X's are.
_FIRST_TWEET_ID = 1_861_000_000_000_000_000
_FIRST_USER_ID = 1_000_000_000
_START = datetime(2026, 11, 1, 12, 0, 0, tzinfo=UTC)
_USERS = 240

# (lang, phrases, hashtags) — phrases in the language's own script.
_LANGUAGES: list[tuple[str, list[str], list[str]]] = [
    (
        "en",
        [
            "Streaming data is finally easy",
            "Just shipped a new pipeline",
            "Who else is watching the launch tonight?",
            "Coffee first, then Kinesis shards",
            "This dashboard looks great",
        ],
        ["AWS", "DataEngineering", "Serverless"],
    ),
    (
        "es",
        ["¡Qué día tan increíble en la conferencia!", "Mañana empieza el maratón de datos", "Nuestra canción favorita otra vez"],
        ["Datos", "Fútbol", "Música"],
    ),
    (
        "fr",
        ["Très bonne journée à Paris", "On déploie ça ce soir, ça va être épique", "Le café est prêt, à vous !"],
        ["Été", "Développement", "Cinéma"],
    ),
    (
        "de",
        ["Schöne Grüße aus München", "Die Straße ist heute völlig überfüllt", "Endlich Wochenende – Zeit für Bücher"],
        ["Fußball", "Technik", "Grüße"],
    ),
    (
        "pt",
        ["Bom dia! Hoje tem lançamento novo", "Não acredito que já é dezembro", "Ação de graças com a família"],
        ["Tecnologia", "Futebol", "Ação"],
    ),
    (
        "ja",
        ["今日はとても良い天気ですね", "新しいデータパイプラインを公開しました", "週末はラーメンを食べに行こう"],
        ["東京", "技術", "ラーメン"],
    ),
    ("zh", ["今天的数据流处理终于跑通了", "大家周末愉快", "这家咖啡店真不错"], ["数据", "云计算", "咖啡"]),
    ("ko", ["오늘 발표 정말 멋졌어요", "주말에 한강 가실 분?", "새로운 기능이 출시되었습니다"], ["서울", "기술", "음악"]),
    ("ar", ["صباح الخير من القاهرة", "البيانات الضخمة تغير كل شيء", "مبروك للفريق على الفوز"], ["تقنية", "كرة_القدم", "القاهرة"]),
    ("he", ["בוקר טוב מתל אביב", "השקנו היום גרסה חדשה", "שבת שלום לכולם"], ["טכנולוגיה", "ישראל"]),
    ("hi", ["नमस्ते दोस्तों, आज का दिन शानदार है", "क्रिकेट मैच देखने का समय", "नई तकनीक सीखना मज़ेदार है"], ["क्रिकेट", "भारत", "तकनीक"]),
    (
        "ru",
        ["Доброе утро, Москва!", "Запустили новый сервис сегодня", "Кто смотрит матч вечером?"],
        ["Технологии", "Футбол", "Москва"],
    ),
    ("el", ["Καλημέρα από την Αθήνα", "Νέα έκδοση σήμερα"], ["Αθήνα", "Τεχνολογία"]),
    ("th", ["สวัสดีครับ วันนี้อากาศดีมาก", "ข้อมูลแบบเรียลไทม์สนุกมาก"], ["กรุงเทพ", "เทคโนโลยี"]),
    ("tr", ["Günaydın İstanbul!", "Bugün yeni sürümü yayınladık, çok heyecanlıyız"], ["İstanbul", "Teknoloji"]),
]
_EMOJI = ["🚀", "🔥", "😂", "❤️", "🎉", "👍🏽", "🙏", "🇯🇵", "👨‍👩‍👧‍👦", "☕", "📈", "🤖", "🌍", "✨"]
_FIRST_NAMES = [
    "Ana",
    "Kenji",
    "Fatima",
    "Olga",
    "Priya",
    "Lucas",
    "Mei",
    "Jonas",
    "Yara",
    "Noah",
    "Sofia",
    "Amir",
    "Hana",
    "Mateo",
    "Zeynep",
    "Ivan",
    "Aisha",
    "Leo",
    "Nia",
    "Ravi",
    "أحمد",
    "さくら",
    "Дмитрий",
    "李娜",
    "민준",
]
_RULES = [("1861000000000000001", "data streaming"), ("1861000000000000002", "languages"), ("1861000000000000003", "emoji")]


def _users(rng: random.Random) -> list[dict[str, str]]:
    users = []
    for index in range(_USERS):
        first = rng.choice(_FIRST_NAMES)
        handle = f"{'user' if not first.isascii() else first.lower()}_{index:03d}{rng.randrange(100):02d}"
        users.append(
            {
                "id": str(_FIRST_USER_ID + index * 7919),
                "name": f"{first} {rng.choice(['✨', '', '', 'Dev'])}".strip(),
                "username": handle,
            }
        )
    return users


def _tweet(rng: random.Random, index: int, users: list[dict[str, str]]) -> dict[str, Any]:
    lang, phrases, tags = rng.choice(_LANGUAGES)
    user = rng.choice(users)
    text = rng.choice(phrases)
    hashtags = []
    for tag in rng.sample(tags, k=rng.randint(0, min(2, len(tags)))):
        text += " "
        hashtags.append({"start": len(text), "end": len(text) + 1 + len(tag), "tag": tag})
        text += f"#{tag}"
    if rng.random() < 0.6:
        text += " " + "".join(rng.choice(_EMOJI) for _ in range(rng.randint(1, 3)))
    created = _START + timedelta(milliseconds=index * 1000 + rng.randrange(1000))
    tweet_id = str(_FIRST_TWEET_ID + index * 4096 + rng.randrange(4096))
    data: dict[str, Any] = {
        "id": tweet_id,
        "text": text,
        "author_id": user["id"],
        "created_at": created.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "lang": lang,
        "conversation_id": tweet_id,
        "public_metrics": {
            "retweet_count": rng.randrange(50),
            "reply_count": rng.randrange(10),
            "like_count": rng.randrange(500),
            "quote_count": rng.randrange(5),
        },
    }
    if hashtags:
        data["entities"] = {"hashtags": hashtags}
    rule_id, rule_tag = rng.choice(_RULES)
    return {"data": data, "includes": {"users": [user]}, "matching_rules": [{"id": rule_id, "tag": rule_tag}]}


def sample_lines(count: int, seed: int) -> list[bytes]:
    """`count` tweets as JSON lines (UTF-8, no trailing newline), identical for the same seed."""
    rng = random.Random(seed)
    users = _users(rng)
    return [json.dumps(_tweet(rng, i, users), ensure_ascii=False, separators=(",", ":")).encode() for i in range(count)]


def write_sample(path: Path, count: int, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(line + b"\n" for line in sample_lines(count, seed)))
