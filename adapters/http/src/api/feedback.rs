//! Reviews and ratings: one of each per reader and book, created once and then replaced.

use folio_domain::catalog::PageRequest;
use folio_domain::services::Bookstore;
use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, OpenApi};

use super::models::{
    RatingRequest, RatingResponse, RatingUpdateResponse, ReviewPage, ReviewRequest, ReviewResponse,
    ReviewUpdateResponse,
};
use super::{book_id, ApiTags, BearerAuth, JsonBody};
use crate::problem::Answer;

/// Reviews and ratings.
pub struct FeedbackApi;

#[derive(ApiResponse)]
enum ReviewCreated {
    #[oai(status = 201)]
    Created(Json<ReviewResponse>),
}

#[derive(ApiResponse)]
enum RatingCreated {
    #[oai(status = 201)]
    Created(Json<RatingResponse>),
}

crate::statuses! {
    /// `create_review`
    CreateReview = [400, 401, 404, 409, 413, 415, 422];
    /// `update_my_review`
    UpdateMyReview = [400, 401, 404, 413, 415, 422];
    /// `list_reviews`
    ListReviews = [400, 404, 422];
    /// `create_rating`
    CreateRating = [400, 401, 404, 409, 413, 415, 422];
    /// `update_my_rating`
    UpdateMyRating = [400, 401, 404, 413, 415, 422];
}

#[OpenApi(prefix_path = "/books", tag = "ApiTags::Feedback")]
impl FeedbackApi {
    /// Review a book
    ///
    /// 409 when the caller already reviewed it: replace the review with PUT instead.
    #[oai(path = "/:id/reviews", method = "post", operation_id = "create_review")]
    async fn create_review(
        &self,
        store: Data<&Bookstore>,
        auth: BearerAuth,
        #[oai(validator(minimum(value = "1")))] id: Path<i64>,
        body: JsonBody<ReviewRequest>,
    ) -> Answer<ReviewCreated, CreateReview> {
        let review = store
            .create_review(auth.0, book_id(id.0)?, &body.text)
            .await?;
        Ok(ReviewCreated::Created(Json(review.into())))
    }

    /// Replace my review
    ///
    /// 404 when the caller has not reviewed the book.
    #[oai(
        path = "/:id/reviews/my",
        method = "put",
        operation_id = "update_my_review"
    )]
    async fn update_my_review(
        &self,
        store: Data<&Bookstore>,
        auth: BearerAuth,
        #[oai(validator(minimum(value = "1")))] id: Path<i64>,
        body: JsonBody<ReviewRequest>,
    ) -> Answer<Json<ReviewUpdateResponse>, UpdateMyReview> {
        let update = store
            .update_my_review(auth.0, book_id(id.0)?, &body.text)
            .await?;
        Ok(Json(update.into()))
    }

    /// List a book's reviews
    #[oai(path = "/:id/reviews", method = "get", operation_id = "list_reviews")]
    async fn list_reviews(
        &self,
        store: Data<&Bookstore>,
        #[oai(validator(minimum(value = "1")))] id: Path<i64>,
        /// 1-based page number (default 1).
        #[oai(validator(minimum(value = "1"), maximum(value = "4294967295")))]
        page: Query<Option<u32>>,
        /// Page size, 1 to 100 (default 20).
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))]
        per_page: Query<Option<u32>>,
    ) -> Answer<Json<ReviewPage>, ListReviews> {
        let id = book_id(id.0)?;
        let page = PageRequest::new(page.0, per_page.0)?;
        Ok(Json(store.list_reviews(id, page).await?.into()))
    }

    /// Rate a book (1 to 5)
    ///
    /// 409 when the caller already rated it: replace the rating with PUT instead.
    #[oai(path = "/:id/ratings", method = "post", operation_id = "create_rating")]
    async fn create_rating(
        &self,
        store: Data<&Bookstore>,
        auth: BearerAuth,
        #[oai(validator(minimum(value = "1")))] id: Path<i64>,
        body: JsonBody<RatingRequest>,
    ) -> Answer<RatingCreated, CreateRating> {
        let rating = store.rate(auth.0, book_id(id.0)?, body.rating).await?;
        Ok(RatingCreated::Created(Json(rating.into())))
    }

    /// Replace my rating
    ///
    /// Answers the new rating and the value it replaced. 404 when the caller has not
    /// rated the book.
    #[oai(
        path = "/:id/ratings/my",
        method = "put",
        operation_id = "update_my_rating"
    )]
    async fn update_my_rating(
        &self,
        store: Data<&Bookstore>,
        auth: BearerAuth,
        #[oai(validator(minimum(value = "1")))] id: Path<i64>,
        body: JsonBody<RatingRequest>,
    ) -> Answer<Json<RatingUpdateResponse>, UpdateMyRating> {
        let update = store
            .update_my_rating(auth.0, book_id(id.0)?, body.rating)
            .await?;
        Ok(Json(update.into()))
    }
}
