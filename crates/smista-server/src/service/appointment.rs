//! `AppointmentService`: availability, slots and bookings (see `smista_core::appointments`),
//! made durable in the ledger before each reply, and the tick's part: holding booked operators
//! before their slots and turning appointments whose slot started into contacts.

use std::sync::Arc;

use smista_core::appointments::{Appointment, AppointmentError, AppointmentState, Availability, Booking};
use smista_proto::v1 as pb;
use smista_proto::v1::appointment_service_server::AppointmentService;
use tonic::{Request, Response, Status};

use crate::app::appointments::hold_booked;
use crate::app::Shared;
use crate::metrics::RpcTimer;
use crate::wire::convert;

/// The appointments service.
#[derive(Debug, Clone)]
pub struct AppointmentSvc(pub Arc<Shared>);

/// An appointment error as a gRPC status (the one mapping of these errors).
fn status(e: AppointmentError) -> Status {
    let code = match &e {
        AppointmentError::Invalid { .. } => tonic::Code::InvalidArgument,
        AppointmentError::NoAppointments(_)
        | AppointmentError::UnknownOperator(_)
        | AppointmentError::UnknownAppointment(_) => tonic::Code::NotFound,
        AppointmentError::Unavailable(_) => tonic::Code::FailedPrecondition,
        AppointmentError::Conflict(_) => tonic::Code::AlreadyExists,
    };
    Status::new(code, e.to_string())
}

fn ms(field: &str, v: u64) -> Result<i64, Status> {
    i64::try_from(v).map_err(|_| Status::invalid_argument(format!("{field} out of range")))
}

fn state_pb(s: AppointmentState) -> pb::AppointmentState {
    match s {
        AppointmentState::Booked => pb::AppointmentState::Booked,
        AppointmentState::Started => pb::AppointmentState::Started,
        AppointmentState::Cancelled => pb::AppointmentState::Cancelled,
    }
}

fn appointment_pb(a: &Appointment) -> pb::Appointment {
    pb::Appointment {
        appointment_id: a.id.clone(),
        queue: a.queue.clone(),
        operator_id: a.operator.clone(),
        display_name: a.display_name.clone(),
        start_unix_ms: u64::try_from(a.start_unix_ms).unwrap_or(0),
        end_unix_ms: u64::try_from(a.end_unix_ms).unwrap_or(0),
        channel: convert::channel_pb(a.channel) as i32,
        segment: convert::segment_pb(a.segment) as i32,
        recording: a.recording,
        state: state_pb(a.state) as i32,
        for_contact_id: a.for_contact.clone(),
    }
}

/// Who books, moves or cancels: a platform or supervisor principal as before, or a desk acting
/// for the contact it is serving (`serving_contact_id`, in service with `desk_operator_id`).
/// Returns the contact the change is made from (empty: none named).
fn serving_contact(
    s: &Shared,
    principal: &crate::edge::auth::Principal,
    contact: &str,
    desk_operator: &str,
) -> Result<String, Status> {
    use crate::config::auth::Role;
    let privileged = principal.roles.has(Role::Platform) || principal.roles.has(Role::Supervisor);
    if contact.is_empty() && desk_operator.is_empty() {
        return if privileged {
            Ok(String::new())
        } else {
            Err(Status::permission_denied(
                "a desk books, moves or cancels only for the contact it is serving: name serving_contact_id and \
                 desk_operator_id",
            ))
        };
    }
    smista_core::validate_id("serving_contact_id", contact).map_err(crate::wire::error::client_error)?;
    smista_core::validate_id("desk_operator_id", desk_operator).map_err(crate::wire::error::client_error)?;
    // A platform or supervisor may name the desk and its contact (recorded and checked); a desk
    // only itself.
    if !privileged {
        principal.check_operator(desk_operator)?;
    }
    let carried = s.recovered(contact).is_some_and(|h| h.operator == desk_operator);
    if !carried && !s.engine.in_service_with(desk_operator, contact) {
        return Err(Status::failed_precondition(format!(
            "contact `{}` is not in service with operator `{}`",
            smista_core::error::clip(contact),
            smista_core::error::clip(desk_operator)
        )));
    }
    Ok(contact.to_owned())
}

/// A desk may change only an appointment booked for the contact it serves.
fn booked_for(s: &Shared, appointment: &str, contact: &str) -> Result<(), Status> {
    if contact.is_empty() {
        return Ok(());
    }
    match s.appointments.get(appointment) {
        Some(a) if a.for_contact == contact => Ok(()),
        Some(_) => Err(Status::failed_precondition(format!(
            "appointment `{}` was not booked for contact `{}`",
            smista_core::error::clip(appointment),
            smista_core::error::clip(contact)
        ))),
        None => Err(Status::not_found(format!("unknown appointment `{}`", smista_core::error::clip(appointment)))),
    }
}

impl AppointmentSvc {
    fn now_unix(&self) -> i64 {
        i64::try_from(self.0.clock.unix_ms(self.0.clock.now())).unwrap_or(i64::MAX)
    }

    /// Makes `a` durable (when there is a ledger) before the reply.
    async fn persist(&self, a: &Appointment) -> Result<(), Status> {
        match &self.0.ledger {
            Some(l) => l.put_appointment(a, self.now_unix()).await.map_err(crate::wire::error::ledger_status),
            None => Ok(()),
        }
    }
}

#[tonic::async_trait]
impl AppointmentService for AppointmentSvc {
    async fn publish_availability(
        &self,
        request: Request<pb::PublishAvailabilityRequest>,
    ) -> Result<Response<pb::PublishAvailabilityResponse>, Status> {
        let t = RpcTimer::start("PublishAvailability");
        let r = async {
            let principal = self.0.principal(&request)?;
            let req = request.into_inner();
            if !principal.roles.has(crate::config::auth::Role::Supervisor) {
                principal.check_operator(&req.operator_id)?;
            }
            let a = Availability {
                operator: req.operator_id,
                queue: req.queue,
                start_unix_ms: ms("start_unix_ms", req.start_unix_ms)?,
                end_unix_ms: ms("end_unix_ms", req.end_unix_ms)?,
                display_name: req.display_name,
            };
            let a = self.0.appointments.publish(a, self.now_unix()).map_err(status)?;
            if let Some(l) = &self.0.ledger {
                l.put_availability(&a).await.map_err(crate::wire::error::ledger_status)?;
            }
            Ok(pb::PublishAvailabilityResponse {})
        }
        .await;
        t.finish(&r);
        r.map(Response::new)
    }

    async fn withdraw_availability(
        &self,
        request: Request<pb::WithdrawAvailabilityRequest>,
    ) -> Result<Response<pb::WithdrawAvailabilityResponse>, Status> {
        let t = RpcTimer::start("WithdrawAvailability");
        let r = async {
            let principal = self.0.principal(&request)?;
            let req = request.into_inner();
            if !principal.roles.has(crate::config::auth::Role::Supervisor) {
                principal.check_operator(&req.operator_id)?;
            }
            let start = ms("start_unix_ms", req.start_unix_ms)?;
            let gone = self.0.appointments.withdraw(&req.operator_id, start).map_err(status)?;
            if let (Some(l), Some(_)) = (&self.0.ledger, &gone) {
                l.delete_availability(&req.operator_id, start).await.map_err(crate::wire::error::ledger_status)?;
            }
            Ok(pb::WithdrawAvailabilityResponse { withdrawn: gone.is_some() })
        }
        .await;
        t.finish(&r);
        r.map(Response::new)
    }

    async fn list_slots(
        &self,
        request: Request<pb::ListSlotsRequest>,
    ) -> Result<Response<pb::ListSlotsResponse>, Status> {
        let t = RpcTimer::start("ListSlots");
        let req = request.into_inner();
        let r = (|| {
            let op = (!req.operator_id.is_empty()).then_some(req.operator_id.as_str());
            let slots = self
                .0
                .appointments
                .free_slots(
                    &req.queue,
                    op,
                    ms("from_unix_ms", req.from_unix_ms)?,
                    ms("to_unix_ms", req.to_unix_ms)?,
                    self.now_unix(),
                )
                .map_err(status)?;
            Ok(pb::ListSlotsResponse {
                slots: slots
                    .into_iter()
                    .map(|s| pb::FreeSlot {
                        operator_id: s.operator,
                        display_name: s.display_name,
                        start_unix_ms: u64::try_from(s.start_unix_ms).unwrap_or(0),
                        end_unix_ms: u64::try_from(s.end_unix_ms).unwrap_or(0),
                    })
                    .collect(),
            })
        })();
        t.finish(&r);
        r.map(Response::new)
    }

    async fn book_appointment(
        &self,
        request: Request<pb::BookAppointmentRequest>,
    ) -> Result<Response<pb::Appointment>, Status> {
        let t = RpcTimer::start("BookAppointment");
        let r = async {
            let principal = self.0.principal(&request)?;
            let req = request.into_inner();
            let for_contact = serving_contact(&self.0, &principal, &req.serving_contact_id, &req.desk_operator_id)?;
            let b = Booking {
                id: req.appointment_id,
                queue: req.queue,
                operator: (!req.operator_id.is_empty()).then_some(req.operator_id),
                start_unix_ms: ms("start_unix_ms", req.start_unix_ms)?,
                channel: convert::channel(req.channel)?,
                segment: convert::segment(req.segment)?,
                recording: req.recording,
                for_contact,
            };
            let a = self.0.appointments.book(&b, self.now_unix()).map_err(status)?;
            // Inside the guard window already: held from now, not from the next tick.
            hold_booked(&self.0, self.0.clock.now());
            self.persist(&a).await?;
            Ok(appointment_pb(&a))
        }
        .await;
        t.finish(&r);
        r.map(Response::new)
    }

    async fn move_appointment(
        &self,
        request: Request<pb::MoveAppointmentRequest>,
    ) -> Result<Response<pb::Appointment>, Status> {
        let t = RpcTimer::start("MoveAppointment");
        let r = async {
            let principal = self.0.principal(&request)?;
            let req = request.into_inner();
            let contact = serving_contact(&self.0, &principal, &req.serving_contact_id, &req.desk_operator_id)?;
            booked_for(&self.0, &req.appointment_id, &contact)?;
            let op = (!req.operator_id.is_empty()).then_some(req.operator_id.as_str());
            let a = self
                .0
                .appointments
                .move_to(&req.appointment_id, ms("start_unix_ms", req.start_unix_ms)?, op, self.now_unix())
                .map_err(status)?;
            hold_booked(&self.0, self.0.clock.now());
            self.persist(&a).await?;
            Ok(appointment_pb(&a))
        }
        .await;
        t.finish(&r);
        r.map(Response::new)
    }

    async fn cancel_appointment(
        &self,
        request: Request<pb::CancelAppointmentRequest>,
    ) -> Result<Response<pb::Appointment>, Status> {
        let t = RpcTimer::start("CancelAppointment");
        let r = async {
            let principal = self.0.principal(&request)?;
            let req = request.into_inner();
            let contact = serving_contact(&self.0, &principal, &req.serving_contact_id, &req.desk_operator_id)?;
            booked_for(&self.0, &req.appointment_id, &contact)?;
            let a = self.0.appointments.cancel(&req.appointment_id).map_err(status)?;
            self.persist(&a).await?;
            Ok(appointment_pb(&a))
        }
        .await;
        t.finish(&r);
        r.map(Response::new)
    }

    async fn list_appointments(
        &self,
        request: Request<pb::ListAppointmentsRequest>,
    ) -> Result<Response<pb::ListAppointmentsResponse>, Status> {
        let t = RpcTimer::start("ListAppointments");
        let req = request.into_inner();
        let r = (|| {
            let (from, to) = (ms("from_unix_ms", req.from_unix_ms)?, ms("to_unix_ms", req.to_unix_ms)?);
            if to <= from || to - from > 31 * 86_400_000 {
                return Err(Status::invalid_argument("to_unix_ms must follow from_unix_ms, by at most 31 days"));
            }
            let list = self.0.appointments.list(&req.queue, from, to);
            Ok(pb::ListAppointmentsResponse { appointments: list.iter().map(appointment_pb).collect() })
        })();
        t.finish(&r);
        r.map(Response::new)
    }
}
